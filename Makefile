# Book Rental: one command to run it, one to test it.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
NAMEKO := .venv/bin/nameko
SERVICE ?=
REPLICAS ?= 1
# make up CLUSTER=3: three RabbitMQ nodes of our own, clustered, and PostgreSQL (ops/clustered.py)
CLUSTER ?=
NODE ?=
export PYTHONWARNINGS := ignore
# Every gateway replica counts rate limits and keeps the deny list of signed-out
# tokens in this Redis (ops/redis.sh starts a local one when none answers).
export REDIS_URL ?= redis://127.0.0.1:6379/0

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

.venv/.installed: requirements.txt requirements-dev.txt ops/install.sh
	@ops/install.sh

deps: .venv/.installed ## Install the pinned Python packages into .venv

broker: ## Make sure RabbitMQ (with its management plugin) is running
	@ops/broker.sh

postgres: ## Make sure PostgreSQL answers at DATABASE_HOST (make up CLUSTER=3 and the storage tests use it)
	@ops/postgres.sh

redis: ## Make sure Redis is running (rate limits and sign-outs shared by the gateway replicas)
	@ops/redis.sh

up: deps $(if $(CLUSTER),postgres,broker) redis ## Start every service, supervised, in the background and wait until ready (again: keeps what runs); CLUSTER=3: on 3 RabbitMQ nodes of its own and PostgreSQL
	@$(PY) -m ops.run up $(if $(CLUSTER),--cluster $(CLUSTER))

broker-stop: deps ## Stop RabbitMQ node NODE=n of make up CLUSTER=3 (the services move to the others)
	@test -n "$(NODE)" || { echo "usage: make broker-stop NODE=n"; exit 2; }
	@$(PY) -m ops.run broker-stop --node $(NODE)

broker-start: deps ## Start RabbitMQ node NODE=n of make up CLUSTER=3 again (it rejoins the cluster)
	@test -n "$(NODE)" || { echo "usage: make broker-start NODE=n"; exit 2; }
	@$(PY) -m ops.run broker-start --node $(NODE)

down: deps ## Stop every process make up/start started (services, supervisor, RabbitMQ nodes of CLUSTER=n), and say which
	@$(PY) -m ops.run down

start: deps broker redis ## Start SERVICE=name [REPLICAS=n]; returns once consuming
	@test -n "$(SERVICE)" || { echo "usage: make start SERVICE=name [REPLICAS=n]"; exit 2; }
	@$(PY) -m ops.run start $(SERVICE) --replicas $(REPLICAS)

stop: deps ## Stop every replica of SERVICE=name; returns once exited
	@test -n "$(SERVICE)" || { echo "usage: make stop SERVICE=name"; exit 2; }
	@$(PY) -m ops.run stop $(SERVICE)

rollout: deps broker redis ## Replace every replica of SERVICE=name, one at a time, with no failed request
	@test -n "$(SERVICE)" || { echo "usage: make rollout SERVICE=name"; exit 2; }
	@$(PY) -m ops.run rollout $(SERVICE)

metrics: deps ## List the running processes' Prometheus metrics URLs
	@$(PY) -m ops.run metrics $(SERVICE)

status: deps ## Every process: replica, pid, state, uptime, restarts, liveness
	@$(PY) -m ops.run status

mail: deps ## Show the last mails the development mail catcher caught (LIMIT=n; 0: all); make up starts it when SMTP_HOST is not set
	@$(PY) -m ops.mailcatcher show --dir "$${MAIL_DIR:-$${BOOKRENTAL_VAR:-var}/mail}" $(if $(LIMIT),--limit $(LIMIT))

logs: ## Follow every service's log
	@tail -F $${BOOKRENTAL_VAR:-var}/log/*.log

shell: deps ## Open a nameko shell on the running system (n.rpc.reservation...)
	@$(NAMEKO) shell --config config.yml

chromium: ## Make sure Debian's Chromium is installed (the browser tests drive it)
	@ops/chromium.sh

axe: ## Make sure the pinned axe-core is in tests/browser/node_modules (the browser tests' accessibility audit)
	@ops/axe.sh

screenshots: ## Copy the README's screenshots, taken by the browser tests, into docs/screenshots/
	@test -d test-results/browser/readme || { echo "no screenshots yet: run the browser tests first (make test, or .venv/bin/nameko test tests/browser)"; exit 2; }
	@mkdir -p docs/screenshots && cp test-results/browser/readme/*.png docs/screenshots/
	@if command -v pngquant >/dev/null; then pngquant --force --skip-if-larger --strip --quality=80-98 --ext .png docs/screenshots/*.png || true; \
	 else echo "(apt-get install pngquant makes them about 3 times smaller)"; fi
	@ls -l docs/screenshots

promtool: deps ## Fetch promtool into .venv/bin (the alert rule tests use it; no Prometheus server is installed)
	@ops/promtool.sh

test: deps broker redis postgres chromium axe promtool ## Run every test (unit, integration, end to end, browser, the cluster's node loss)
	@$(NAMEKO) test tests -q -p no:cacheprovider

test-cluster: deps redis postgres ## The node-loss test on three RabbitMQ nodes of its own and PostgreSQL (about 3 minutes; SPEC §12)
	@$(NAMEKO) test tests/faults/test_cluster.py -q -p no:cacheprovider -m cluster -s

migrate: deps ## Migrate every SQL database in config.yml to the newest schema [SERVICE=name]
	@$(PY) -m ops.migrate upgrade $(SERVICE)

revision: deps ## Write the next migration of SERVICE=name from its models: MESSAGE="what changes"
	@test -n "$(SERVICE)" || { echo "usage: make revision SERVICE=name MESSAGE='what changes'"; exit 2; }
	@$(PY) -m ops.migrate revision $(SERVICE) -m "$(or $(MESSAGE),change)"

.PHONY: migrate revision

test-fast: deps broker redis ## The inner loop: unit and integration tests only
	@$(NAMEKO) test tests/unit tests/integration -q -p no:cacheprovider

.PHONY: help deps broker postgres redis up down broker-stop broker-start start stop status logs shell test test-cluster test-fast chromium axe screenshots rollout metrics promtool mail

docs: deps ## Regenerate docs/asyncapi.json, docs/events.md and README's event table from the schemas and contracts
	@$(PY) -m common.asyncapi > docs/asyncapi.json.tmp && mv docs/asyncapi.json.tmp docs/asyncapi.json
	@$(PY) -m common.asyncapi --markdown > docs/events.md.tmp && mv docs/events.md.tmp docs/events.md
	@$(PY) -m common.asyncapi --readme README.md
	@$(PY) -m common.asyncapi --check

.PHONY: docs

dlq: deps ## List parked (dead-lettered) events per queue, with reasons; REPLAY=1 [QUEUE=name] moves them back
	@$(PY) -m ops.dlq $(if $(REPLAY),--replay) $(if $(QUEUE),--queue $(QUEUE))

soak: deps broker ## Load + random kill -9 of services for MINUTES=n (default 5), then audit what was lost
	@$(PY) -m bench.soak --minutes $(or $(MINUTES),5)

.PHONY: dlq soak

events: deps ## Print every event of reservation ID=<id>, in order, from the event log [SINCE=6h or an ISO time]
	@test -n "$(ID)" || { echo "usage: make events ID=<reservation id> [SINCE=6h]"; exit 2; }
	@$(PY) -m ops.events "$(ID)" $(if $(SINCE),--since "$(SINCE)")

replay: deps ## Rebuild SERVICE=mypage|notification's store from the event log, while the system runs [PARTIAL=1]
	@test -n "$(SERVICE)" || { echo "usage: make replay SERVICE=mypage|notification"; exit 2; }
	@$(PY) -m ops.replay $(SERVICE) $(if $(PARTIAL),--partial)

.PHONY: events replay

bench: deps broker ## Benchmark against bare Nameko measured in the same run (DURATION=20 REPLICAS=1 MAX_WORKERS=10); SWEEP=1 for replicas x pool sizes, SWEEP=1 POSTGRES=1 on PostgreSQL
	@DURATION=$(or $(DURATION),20) REPLICAS=$(REPLICAS) $(PY) -m bench.run $(if $(SWEEP),--sweep) $(if $(POSTGRES),--postgres --sweep-workers 10)

profile: deps broker ## Where a reservation's CPU goes: py-spy on every process at RATE=25/s for DURATION=20 s, by layer and function
	@$(PY) -m bench.profile $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION))

.PHONY: bench profile
