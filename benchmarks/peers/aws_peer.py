"""The AWS Durable Execution SDK for Python as a peer, on its local test runner.

The SDK checkpoints each step (a blocking SUCCEED checkpoint; the runner's service stores the
whole execution) and resumes an execution by invoking its handler again from the top, each
checkpointed operation returning its recorded result instead of running. Here the handler runs
in this process under ``DurableFunctionTestRunner``: its in-process service, scheduler and
invoker, with an in-memory or a SQLite store. Nothing contacts AWS.

No delay here is the runner's: ``wait_for_result`` blocks on an event, and its
``poll_interval`` (1 s by default) paces only ``wait_for_callback``, not used. The SDK's own
waits stay as shipped: a blocking checkpoint waits 1 ms for more work to join its batch, and
an invocation's end waits for the checkpoint thread, which checks for shutdown every 0.1 s
(so each invocation, hence each resumption, lasts about 0.1 s longer than its work).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aws_durable_execution_sdk_python import (
    DurableContext,
    StepContext,
    durable_execution,
    durable_step,
)
from aws_durable_execution_sdk_python.execution import InvocationStatus
from aws_durable_execution_sdk_python_testing.execution import Execution
from aws_durable_execution_sdk_python_testing.runner import (
    DurableFunctionTestResult,
    DurableFunctionTestRunner,
)
from aws_durable_execution_sdk_python_testing.stores.base import ExecutionStore
from aws_durable_execution_sdk_python_testing.stores.memory import InMemoryExecutionStore
from aws_durable_execution_sdk_python_testing.stores.sqlite import SQLiteExecutionStore
from aws_durable_execution_sdk_python_testing.web.server import WebServer, WebServiceConfig

from .base import READY, Peer, Unsupported, append_line, start_clock

for _name in ("aws_durable_execution_sdk_python", "aws_durable_execution_sdk_python_testing"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)  # suspensions log as warnings

EXECUTION_TIMEOUT = 24 * 3600  # seconds: long SQLite executions are slow, never cut them off
WAIT = 600.0  # seconds to wait for anything the runner does in the background
RECOVERY_FILE = "aws-recovery.json"  # prepare's execution ARN and callback id
SERVE_FILE = "aws-serve.json"  # serve's port and callback ids, for publish


# Module-level probes: step bodies run in this process, so they can count and signal.
_executed: Counter[str] = Counter()  # step bodies that really ran (a replayed step does not)
_resumed = threading.Event()
_resumed_at: list[float] = []
_announced: set[str] = set()  # serve's marks already written (the handler replays)


@durable_step
def trivial(step_context: StepContext, i: int) -> int:
    """The trivial step."""
    _executed["trivial"] += 1
    return i


@durable_step
def resumed(step_context: StepContext, i: int) -> int:
    """Step k+1 of the recovered execution: records when its body began."""
    _resumed_at.append(time.perf_counter())
    _executed["resumed"] += 1
    _resumed.set()
    return i


def _steps(context: DurableContext, n: int) -> int:
    return sum(context.step(trivial(i), name=f"step-{i}") for i in range(n))


@durable_execution
def run_steps(event: dict[str, Any], context: DurableContext) -> int:
    return _steps(context, event["n"])


@durable_execution
def hold(event: dict[str, Any], context: DurableContext) -> int:
    data = list(range(event["m"]))  # stays alive across every step (never checkpointed)
    return _steps(context, event["n"]) + len(data)


@durable_execution
def recoverable(event: dict[str, Any], context: DurableContext) -> int:
    """k steps, then a callback: the first invocation suspends there with k checkpoints."""
    k = event["k"]
    total = _steps(context, k)
    value = context.create_callback(name="resume").result()
    total += context.step(resumed(k), name=f"step-{k}")
    _check(value, "go")  # after step k+1, so that a wrong value fails the run, not hangs it
    return total


@durable_execution
def waiter(event: dict[str, Any], context: DurableContext) -> int:
    """Waits for e0, e1, ... in turn. Their callbacks are created up front, so an event can be
    sent before the handler waits for it (as a mailbox allows); each wait then suspends the
    invocation and the callback's completion invokes the handler again, which replays."""
    marks = Path(event["marks"])
    callbacks = [context.create_callback(name=f"e{i}") for i in range(event["count"])]
    if READY not in _announced:  # once per execution, not once per replay
        _announced.add(READY)
        ids = {"port": event["port"], "ids": [callback.callback_id for callback in callbacks]}
        Path(event["ids"]).write_text(json.dumps(ids))
        append_line(marks, READY)
    for index, callback in enumerate(callbacks):
        value = callback.result()  # suspends until e{index} arrives; replayed afterwards
        if f"e{index}" not in _announced:
            _announced.add(f"e{index}")
            append_line(marks, repr(time.time()))
        _check(value, str(index))
    return len(callbacks)


def _check(actual: object, expected: object) -> None:
    if actual != expected:
        raise RuntimeError(f"expected {expected!r}, got {actual!r}")


def _value(result: DurableFunctionTestResult) -> Any:
    """The handler's return value, once it succeeded."""
    if result.status is not InvocationStatus.SUCCEEDED:
        raise RuntimeError(f"execution {result.status.value}: {result.error}")
    return json.loads(result.result) if result.result is not None else None


class _Aws(Peer):
    """The runner in this process; the subclasses only say which store it gets."""

    label = "AWS Durable Execution"

    def __init__(self, directory: Path, database_url: str | None = None) -> None:
        super().__init__(directory, database_url)
        self._serving: dict[str, Any] | None = None  # publish's view of SERVE_FILE

    def _store(self) -> ExecutionStore:
        raise NotImplementedError

    def _runner(self, handler: Callable[..., Any],
                store: ExecutionStore | None = None) -> DurableFunctionTestRunner:
        if store is None:
            store = self._store()
        return DurableFunctionTestRunner(handler=handler, store=store)

    def _run(self, runner: DurableFunctionTestRunner, name: str, **event: Any) -> Any:
        result = runner.run(input=json.dumps(event), execution_timeout=EXECUTION_TIMEOUT,
                            execution_name=name)
        return _value(result)

    def steps(self, n: int) -> float:
        with self._runner(run_steps) as runner:
            start = start_clock()
            total = self._run(runner, "steps", n=n)
            elapsed = time.perf_counter() - start
        _check(total, n * (n - 1) // 2)
        _check(_executed["trivial"], n)
        return elapsed

    def holding(self, m: int, n: int) -> float:
        with self._runner(hold) as runner:
            start = start_clock()
            total = self._run(runner, "holding", m=m, n=n)
            elapsed = time.perf_counter() - start
        _check(total, n * (n - 1) // 2 + m)
        return elapsed / n

    def throughput(self, instances: int, steps: int) -> float:
        # run_async starts each execution at once; the runner invokes handlers on a thread
        # pool of its own, so the executions run concurrently.
        with self._runner(run_steps) as runner:
            start = start_clock()
            arns = [runner.run_async(input=json.dumps({"n": steps}),
                                     execution_timeout=EXECUTION_TIMEOUT,
                                     execution_name=f"throughput-{i}")
                    for i in range(instances)]
            totals = [_value(runner.wait_for_result(arn, timeout=EXECUTION_TIMEOUT))
                      for arn in arns]
            elapsed = time.perf_counter() - start
        _check(totals, [steps * (steps - 1) // 2] * instances)
        return instances * steps / elapsed

    def serve(self, count: int, marks: Path) -> None:
        # The runner's own HTTP API (the one WebRunner serves), on loopback and on this
        # runner's executor, is how another process sends a callback to this execution.
        # (WebRunner itself would invoke the handler at a Lambda endpoint, none here.)
        with self._runner(waiter) as runner:
            config = WebServiceConfig(host="127.0.0.1", port=0, log_level=logging.WARNING)
            server = WebServer(config, runner._executor)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                received = self._run(runner, "serve", count=count, marks=str(marks),
                                     ids=str(self.directory / SERVE_FILE),
                                     port=server.server_address[1])
            finally:
                server.shutdown()
                server.server_close()
        _check(received, count)

    def publish(self, index: int) -> None:
        if self._serving is None:  # written before READY
            self._serving = json.loads((self.directory / SERVE_FILE).read_text())
        callback_id = quote(self._serving["ids"][index], safe="")
        connection = http.client.HTTPConnection("127.0.0.1", self._serving["port"], timeout=WAIT)
        try:
            connection.request("POST", f"/2025-12-01/durable-execution-callbacks/{callback_id}"
                               "/succeed", body=str(index).encode())
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"callback e{index}: HTTP {response.status} {body!r}")


class AwsMemory(_Aws):
    store = "in-memory (local runner)"
    durability = "memory"

    def _store(self) -> ExecutionStore:
        return InMemoryExecutionStore()

    def prepare(self, k: int) -> None:
        raise Unsupported("in-memory store: nothing survives the process")

    def recover(self, k: int) -> float:
        raise Unsupported("in-memory store: nothing survives the process")


class AwsSqlite(_Aws):
    store = "SQLite (local runner)"
    # SQLiteExecutionStore opens each connection with journal_mode=WAL, synchronous=NORMAL:
    # a commit reaches the WAL file without an fsync.
    durability = "no fsync per step (SQLite synchronous=NORMAL)"

    def _store(self) -> ExecutionStore:
        return SQLiteExecutionStore.create_and_initialize(self.directory / "aws.sqlite")

    def prepare(self, k: int) -> None:
        """The execution suspends at its callback after k steps; the runner (and this
        process) then stops, leaving the execution running in the SQLite file."""
        store = self._store()
        with self._runner(recoverable, store) as runner:
            arn = runner.run_async(input=json.dumps({"k": k}),
                                   execution_timeout=EXECUTION_TIMEOUT, execution_name="recover")
            callback_id = _suspended_callback(store, arn)
        # Closing the runner drained its lanes: the invocation's end is in the store too.
        _check(_executed, Counter(trivial=k))
        _check(len(store.load(arn).operations), k + 2)  # the execution, k steps, the callback
        record = {"arn": arn, "callback_id": callback_id}
        (self.directory / RECOVERY_FILE).write_text(json.dumps(record))

    def recover(self, k: int) -> float:
        """Completing the callback makes this runner invoke the handler, which replays the k
        checkpointed steps and runs step k+1. A fresh runner knows nothing of the execution
        but what the store holds (it has no completion event for it), so the end is read
        from the store."""
        record = json.loads((self.directory / RECOVERY_FILE).read_text())
        start = start_clock()
        store = self._store()
        with self._runner(recoverable, store) as runner:
            runner.send_callback_success(record["callback_id"], result=b"go")
            if not _resumed.wait(WAIT):
                raise TimeoutError(f"step {k + 1} did not begin within {WAIT} s")
            elapsed = _resumed_at[0] - start
            execution = _finished(store, record["arn"])
        _check(_executed, Counter(resumed=1))  # the k earlier steps were replayed, not run
        _check(len(execution.operations), k + 3)  # no step was recorded twice
        if execution.result is None:
            raise RuntimeError("the recovered execution has no result")
        _check(_value(DurableFunctionTestResult.create(execution)), k * (k - 1) // 2 + k)
        return elapsed


def _suspended_callback(store: ExecutionStore, arn: str) -> str:
    """The id of the execution's callback, once the invocation that created it has ended.

    Read from the store: the runner's ``wait_for_callback`` reads only the first page of the
    history (100 events, two a step), so it never finds the callback after 50 steps or more.
    """
    deadline = time.monotonic() + EXECUTION_TIMEOUT
    while time.monotonic() < deadline:
        execution = store.load(arn)
        if execution.is_complete:
            raise RuntimeError(f"the execution ended instead of waiting: {execution.result}")
        for operation in execution.operations:
            details = operation.callback_details
            if details is not None and details.callback_id and execution.invocation_completions:
                return details.callback_id
        time.sleep(0.1)  # each load parses the whole execution: do not slow the handler down
    raise TimeoutError("the execution did not reach its callback")


def _finished(store: ExecutionStore, arn: str) -> Execution:
    """The execution once the store holds it complete."""
    deadline = time.monotonic() + WAIT
    while not (execution := store.load(arn)).is_complete:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the recovered execution did not end within {WAIT} s")
        time.sleep(0.01)
    return execution
