"""Throughput, latency, CPU and memory benchmarks for the engine.

`python -m bench.run` drives a bare MLLP server (the ceiling: framing and a fixed ACK, no storage)
and then the real engine with the same synthetic load, and reports both side by side.  Modules:

* `bench.synth`: synthetic REF^I12 / SIU^S12 messages (fake patients only), unique ids each.
* `bench.bare_server`: the ceiling server.
* `bench.loadgen`: the load generator (asyncio, strict request/response per connection).
* `bench.procs`: server subprocesses, free ports, and /proc readings (CPU ticks, VmRSS).
* `bench.measure`: one throughput measurement (with server CPU) and the memory check.
* `bench.summary`: the figures as JSON and as the printed table, targets judged PASS/MISS.
* `bench.run`: the whole run, writing `bench/results/latest.json`.
* `bench.pipelined`: the ACK latency of the second of two frames sent in one write.
* `bench.hostile`: hostile MLLP traffic, one bounded attempt per kind of abuse.
* `bench.soak` and `bench.soak_report`: valid beside hostile traffic for N minutes, judged
  PASS/FAIL (docs/performance.md).
"""
