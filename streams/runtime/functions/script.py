"""`transforms/script`: the node's JavaScript (`params.transform`) runs once per record.

The script is the reference product's: top-level `await push(record)` sends records on
(any number per input, zero drops it), `payload` is the record, `state.node` a JSON
object kept across records and batches, `log.info/warn/error(...)` writes to the
stream's log, `audit.count/sum/set` are accepted, and `require("moment")` is the one
module. It runs in `streams.runtime.sandbox`; see there for what it cannot reach and
its limits. A record the script throws on fails with the error's message, and nothing
it pushed goes on.
"""

from __future__ import annotations

from streams.runtime import sandbox
from streams.runtime.base import Emit, Function, Item, function


@function("transforms/script")
class ScriptFunction(Function):
    # Scripts read the clock and count in state.node: a re-run pass replays them.
    replay_on_rerun = True

    def process(self, items: list[Item], emit: Emit) -> None:
        if not items:
            return
        source = self.params.get("transform") or ""
        outcome = sandbox.run_script(
            operator_id=self.ctx.operator_id,
            version_id=self.ctx.version_id,
            node_id=self.ctx.node_id,
            source=source,
            payloads=[item.payload for item in items],
            state=self.ctx.state,
        )
        for item, record in zip(items, outcome.records, strict=True):
            for level, message in record.logs:
                self.ctx.log(level, message)
            if record.error is not None:
                emit.fail(item, record.error)
                continue
            for pushed in record.pushed:
                emit(Item(pushed, item.origin))
        # In place: the engine holds this dict and saves it with the batch.
        if outcome.state is not self.ctx.state:
            self.ctx.state.clear()
            self.ctx.state.update(outcome.state)
