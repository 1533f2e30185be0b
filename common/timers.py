"""``@every(config_key, default)``: Nameko's timer entrypoint, with its
interval taken from the config (so an operator, or a test, can change it),
and fired once as soon as the service starts (work left over by a crashed
predecessor is taken up at once, not an interval later).

Every replica runs its own timer: the work it does must be safe to do
twice at the same moment (read, then decide again inside the write).
"""
from nameko.timer import Timer


class ConfiguredTimer(Timer):
    def __init__(self, config_key, default, **kwargs):
        super().__init__(interval=default, eager=True, **kwargs)
        self.config_key = config_key
        self.default = default

    def setup(self):
        super().setup()
        self.interval = float(self.container.config.get(self.config_key) or self.default)


every = ConfiguredTimer.decorator
