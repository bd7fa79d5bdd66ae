"""Benchmarks of charivo_fsm: ``make bench`` (``python -m benchmarks``).

Workloads (sizes and mix of the TypeScript original's figures):

a. 1,000,000 transport events (60% text delta, 30% lipsync, 5% response started,
   5% response completed) through the transport callback of an active session, as
   one burst and with the event loop run every 1,000 events;
b. 100,000 tool calls until the transport has received 100,000 results, all in
   flight at once and one at a time;
c. creating 10,000 managers, each with its own fake transport and 3 tools;
d. 10,000 concurrent ``update_session`` calls, each in its own task, while one
   patch is parked in flight;
e. one response of 100,000 deltas: cost per delta over the last 10% / first 10%;
f. 1,000 concurrent entered sessions fed the workload-a mix at 50 events/s each:
   callback-to-emitter latency and memory per entered session;
g. voice sessions per core: N live sessions over the real transport against the
   voice server in a process of its own (``voice_server``), one client process per
   run (``voice_client``): charivo, the floor (bare ``websockets``) and the peer
   (``openai-agents``), N = 50, 100, 200, 500, 1,000 until a client falls behind
   (``voice``).

Floors measured in the same runs: bare ``emit`` calls for a, bare anyio tasks for b
and d, the bare ``websockets`` client for g.

Baseline measured in the same run (``--baseline REV``, default ``839d7a2``): the
``charivo_fsm`` of that commit runs a-f too, its runs interleaved with the working
tree's, each run of either in a fresh process (``baseline``, ``child``).

Every figure of a-f is the median of 5 runs, each a process of its own with a warm-up
(min-max spread), of g the median of 3.  The tables are printed, written to
``benchmarks/results.json``, into ``docs/performance.md`` and into the README's compact
table.  Timing lives here only, never in the unit tests.
"""
