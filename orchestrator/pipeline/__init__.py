"""The pipeline of one download, one module per step; `manager.Manager` is its facade.

| module      | its job |
|-------------|---------|
| registry.py | where jobs live: each `Job` with its live state (`LiveJob`), limits, retention |
| context.py  | what every step shares: settings, registry, engine, events, resolver; state changes |
| engine.py   | the engine's blocking calls, run in a worker thread, errors made readable |
| announce.py | job events to every client, progress at most about once a second |
| health.py   | whether the engine answers, and telling the clients when that changes |
| steps.py    | the steps of one job: prepare (resolve, hand over), finish (verify, install) |
| work.py     | who runs the steps: one task per job, its outcome applied, recovery after a restart |
| observe.py  | what a transfer's status means for its job (a pure decision) |
| poller.py   | the poll loop: timer, wake-ups, engine health, observing every transfer |
"""
