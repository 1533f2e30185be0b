"""The system's configuration and its services, named once.

``config.yml`` holds every setting, each overridable by the environment
variable named in its ``${NAME:default}``; ``load_config`` reads it exactly as
``nameko run --config`` does (Nameko's YAML loader). ``SERVICES`` is the one
list of the services: ``ops`` runs them, ``common.migrate`` migrates their
databases, the gateway checks the backends' health, the docs list them.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "config.yml")

# name -> the Nameko service class ``nameko run`` starts. Every name but the
# gateway is a backend (speaks only AMQP).
SERVICES = {
    "product": "product.service:ProductService",
    "reservation": "reservation.service:ReservationService",
    "delivery": "delivery.service:DeliveryService",
    "mypage": "mypage.service:MyPageService",
    "notification": "notification.service:NotificationService",
    "gateway": "gateway.service:GatewayService",
}
GATEWAY = "gateway"
BACKENDS = tuple(name for name in SERVICES if name != GATEWAY)


def load_config(env=None, path=PATH):
    """The configuration at ``path`` as ``nameko run`` builds it, with
    ``env`` (a dict of environment variables) on top of the process's own."""
    import yaml  # imported here: the health probe loads this module every few seconds
    from nameko.cli.main import setup_yaml_parser

    setup_yaml_parser()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    finally:
        os.environ.clear()
        os.environ.update(saved)
