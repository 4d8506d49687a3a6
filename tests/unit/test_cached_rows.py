"""
The write-behind cache used by verify's rebuild answers as the rows behind it would,
whatever its capacity, and leaves them equal once flushed.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vmsnap.projections.cached_rows import CachedRows
from vmsnap.projections.rows import MemoryRows

keys = st.sampled_from(["a", "b", "c", "d", "e"])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.sampled_from(["vm-1", "vm-2"]), st.integers(1, 9)),
        st.tuples(st.just("delete"), keys, st.none(), st.none()),
        st.tuples(st.just("get"), keys, st.none(), st.none()),
        st.tuples(st.just("find"), st.none(), st.sampled_from(["vm-1", "vm-2"]), st.none()),
    ),
    max_size=60,
)


@given(ops, st.integers(min_value=1, max_value=4))
def test_cached_rows_behave_as_the_rows_behind_them(steps: list, capacity: int) -> None:
    model, backing = MemoryRows(), MemoryRows()
    cached = CachedRows(backing, capacity)
    for seq, (op, key, vm, value) in enumerate(steps, start=1):
        if op == "put":
            doc = {"id": key, "vm_id": vm, "value": value}
            model.put("volumes", key, doc, seq)
            cached.put("volumes", key, doc, seq)
        elif op == "delete":
            model.delete("volumes", key)
            cached.delete("volumes", key)
        elif op == "get":
            assert cached.get("volumes", key) == model.get("volumes", key)
        else:
            assert cached.find("volumes", "vm_id", vm) == model.find("volumes", "vm_id", vm)
    cached.flush()
    assert backing.dump() == model.dump()
