"""
The audit on a real SQLite store file: the chain catches tampering done with raw sqlite3,
time travel gives the state at each step, replay never calls an adapter, and events can
be encrypted and compressed at rest.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STORE_FILE, world_config
from tests.support import needs, write_config
from vmsnap import Controller, InvalidRequest, NotFound
from vmsnap.domain.exceptions import ConfigError, StoreError

EVENTS = "stored_events"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A store with a frozen (KVM) snapshot created, reverted and deleted, and another one."""
    config = write_config(tmp_path, world_config())
    with Controller.from_config(config) as ctrl:
        kvm = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        ctrl.revert_vm_snapshot(kvm.id)
        ctrl.delete_vm_snapshot(kvm.id)
        vmw = ctrl.create_vm_snapshot("vm-vmware", quiesce=True)
        report = ctrl.audit_verify()
        assert report.ok, report.problems
        info = {"config": config, "kvm": kvm.id, "vmware": vmw.id, "events": report.events}
        info["positions"] = {e.position: e.type for e in ctrl.audit_timeline(snapshot_id=kvm.id)}
    yield tmp_path / STORE_FILE, info


def tamper(db: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    with sqlite3.connect(db) as conn:
        for sql, params in statements:
            conn.execute(sql, params)


def verify(info: dict[str, Any]) -> list[str]:
    with Controller.from_config(info["config"]) as ctrl:
        report = ctrl.audit_verify()
    assert report.ok is (not report.problems)
    return list(report.problems)


def position_of(info: dict[str, Any], event_type: str) -> int:
    return next(p for p, t in info["positions"].items() if t == event_type)


def test_an_untouched_log_verifies_and_names_its_chain_head(store: Any) -> None:
    _, info = store
    with Controller.from_config(info["config"]) as ctrl:
        report = ctrl.audit_verify()
    assert report.ok and report.problems == ()
    assert report.chain_head is not None
    assert report.chain_head[0] == report.events == info["events"]
    assert len(report.chain_head[1]) == 64


def test_verify_reports_a_deleted_event_with_its_position(store: Any) -> None:
    db, info = store
    p = position_of(info, "Snapshot.UnquiesceDecided")
    tamper(db, (f"DELETE FROM {EVENTS} WHERE rowid=?", (p,)))
    problems = verify(info)
    assert f"position {p}: event deleted (sealed, now missing)" in problems


def test_verify_reports_a_changed_event_with_its_position(store: Any) -> None:
    db, info = store
    p = position_of(info, "VmSnapshot.DriverSnapshotTaken")
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute(f"SELECT state FROM {EVENTS} WHERE rowid=?", (p,)).fetchone()
        doc = json.loads(state)
        doc["need_unquiesce"] = not doc["need_unquiesce"]  # rewrite what the driver said
        conn.execute(f"UPDATE {EVENTS} SET state=? WHERE rowid=?", (json.dumps(doc).encode(), p))
    problems = verify(info)
    assert f"position {p}: event changed after it was sealed" in problems


def test_verify_reports_reordered_events_with_both_positions(store: Any) -> None:
    db, info = store
    p = position_of(info, "Snapshot.QuiesceStarted")
    q = position_of(info, "Snapshot.Completed")
    tamper(
        db,
        (f"UPDATE {EVENTS} SET rowid=-1 WHERE rowid=?", (p,)),
        (f"UPDATE {EVENTS} SET rowid=? WHERE rowid=?", (p, q)),
        (f"UPDATE {EVENTS} SET rowid=? WHERE rowid=-1", (q,)),
    )
    problems = verify(info)
    assert f"position {p}: event reordered (it was sealed at position {q})" in problems
    assert f"position {q}: event reordered (it was sealed at position {p})" in problems


def test_verify_reports_an_inserted_event_with_its_position(store: Any) -> None:
    db, info = store
    p = position_of(info, "Snapshot.Unquiesced")
    with sqlite3.connect(db) as conn:
        last = conn.execute(f"SELECT MAX(rowid) FROM {EVENTS}").fetchone()[0]
        for rowid in range(last, p - 1, -1):  # make room at p: shift the rest up by one
            conn.execute(f"UPDATE {EVENTS} SET rowid=? WHERE rowid=?", (rowid + 1, rowid))
        _, _, topic, state = conn.execute(
            f"SELECT * FROM {EVENTS} WHERE rowid=?", (p + 1,)
        ).fetchone()
        conn.execute(
            f"INSERT INTO {EVENTS} (rowid, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)",
            (p, uuid.uuid4().hex, 1, topic, state),
        )
    problems = verify(info)
    inserted = [x for x in problems if "inserted" in x]
    assert inserted and inserted[0].startswith(f"position {p}: event inserted (never sealed)")
    assert "shifted by one position" in inserted[0]


def test_verify_reports_an_event_whose_columns_were_given_nonsense(store: Any) -> None:
    db, info = store
    p = position_of(info, "Snapshot.Completed")
    tamper(
        db,
        (
            f"UPDATE {EVENTS} SET originator_id='nonsense', originator_version=1.5 WHERE rowid=?",
            (p,),
        ),
    )
    problems = verify(info)
    assert f"position {p}: event changed after it was sealed" in problems
    assert any(x.startswith(f"position {p}: the stored event cannot be read") for x in problems)


def test_verify_reports_a_rewritten_seal(store: Any) -> None:
    db, info = store
    p = position_of(info, "Snapshot.Completed")
    tamper(db, ("UPDATE event_chain SET hash=randomblob(32) WHERE position=?", (p,)))
    problems = verify(info)
    assert any(x.startswith(f"position {p}: seal altered") for x in problems)


def test_a_changed_event_with_its_own_seal_recomputed_breaks_the_next_link(store: Any) -> None:
    from vmsnap.adapters.chain import digest, link

    db, info = store
    p = position_of(info, "VmSnapshot.DriverSnapshotTaken")
    with sqlite3.connect(db) as conn:
        oid, version, topic, state = conn.execute(
            f"SELECT * FROM {EVENTS} WHERE rowid=?", (p,)
        ).fetchone()
        doc = json.loads(state)
        doc["need_unquiesce"] = not doc["need_unquiesce"]
        forged = json.dumps(doc).encode()
        (prev,) = conn.execute("SELECT hash FROM event_chain WHERE position=?", (p - 1,)).fetchone()
        d = digest(oid, version, topic, forged)
        conn.execute(f"UPDATE {EVENTS} SET state=? WHERE rowid=?", (forged, p))
        conn.execute(
            "UPDATE event_chain SET digest=?, hash=? WHERE position=?", (d, link(prev, p, d), p)
        )
    problems = verify(info)
    assert any(x.startswith(f"position {p + 1}: seal altered") for x in problems)


def test_a_whole_chain_rewritten_passes_alone_but_not_against_a_kept_head(store: Any) -> None:
    from vmsnap.adapters.chain import GENESIS, digest, link

    db, info = store
    with Controller.from_config(info["config"]) as ctrl:
        kept = ctrl.audit_verify().chain_head
    assert kept is not None
    p = position_of(info, "VmSnapshot.DriverSnapshotTaken")
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute(f"SELECT state FROM {EVENTS} WHERE rowid=?", (p,)).fetchone()
        doc = json.loads(state)
        doc["need_unquiesce"] = not doc["need_unquiesce"]
        conn.execute(f"UPDATE {EVENTS} SET state=? WHERE rowid=?", (json.dumps(doc).encode(), p))
        conn.execute("DELETE FROM event_chain")  # an attacker who re-seals everything
        previous = GENESIS
        for row in conn.execute(f"SELECT rowid, * FROM {EVENTS} ORDER BY rowid").fetchall():
            d = digest(*row[1:])
            previous = link(previous, row[0], d)
            conn.execute("INSERT INTO event_chain VALUES (?, ?, ?)", (row[0], d, previous))
    with Controller.from_config(info["config"]) as ctrl:
        alone = ctrl.audit_verify()
        against = ctrl.audit_verify(expect_head=f"{kept[0]}:{kept[1]}")
        with pytest.raises(InvalidRequest, match="POSITION:HASH"):
            ctrl.audit_verify(expect_head="12:nothex")
    # What the chain does not prove: a consistent rewrite (the AND rule still flags this one).
    assert not any("sealed" in x or "seal altered" in x for x in alone.problems)
    assert f"position {kept[0]}: the chain does not pass through the head kept" in " ".join(
        against.problems
    )


def test_the_verify_command_exits_1_with_the_contract_shape_when_tampered(
    store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmsnap.cli import main

    db, info = store
    p = position_of(info, "Snapshot.Quiesced")
    tamper(db, (f"DELETE FROM {EVENTS} WHERE rowid=?", (p,)))
    assert main(["--config", str(info["config"]), "audit", "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {"ok", "events", "problems"} <= set(report)
    assert report["ok"] is False
    assert f"position {p}: event deleted (sealed, now missing)" in report["problems"]


# -- time travel ---------------------------------------------------------------------------


def test_time_travel_gives_the_state_at_each_step_of_create_revert_and_delete(
    store: Any,
) -> None:
    _, info = store
    sid = info["kvm"]
    with Controller.from_config(info["config"]) as ctrl:
        timeline = ctrl.audit_timeline(snapshot_id=sid)
        states = [ctrl.audit_state(sid, e.position).state for e in timeline]
        by_time = [ctrl.audit_state(sid, e.timestamp).state for e in timeline]
        first = timeline[0].position
        with pytest.raises(NotFound, match="did not exist yet"):
            ctrl.audit_state(sid, first - 1)
        with pytest.raises(NotFound):
            ctrl.audit_state(str(uuid.uuid4()), first)
        with pytest.raises(InvalidRequest):
            ctrl.audit_state(sid, "yesterday")
        became_current = next(
            e.position
            for e in ctrl.audit_export()
            if e.type == "Vm.CurrentSnapshotChanged" and e.data["snapshot_id"] == sid
        )
        assert ctrl.audit_state(sid, became_current - 1).current is False
        assert ctrl.audit_state(sid, became_current).current is True
        now = ctrl.get_vm_snapshot(sid)
        assert ctrl.audit_state(sid, 10**9).to_dict() == now.to_dict()
    assert states == by_time
    steps = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert steps == [
        "allocated",
        "quiescing",
        "snapshotting",
        "unquiescing",
        "ready",
        "reverting",
        "ready",
        "expunging",
        "removed",
    ]


# -- replay never calls an adapter ---------------------------------------------------------


class Raising:
    """A hypervisor or driver that fails the test when anything of it is used."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        raise AssertionError(f"the audit used {self.name}.{attr}")


def test_replaying_for_an_audit_never_calls_a_hypervisor_or_driver(store: Any) -> None:
    _, info = store
    with Controller.from_config(info["config"]) as ctrl:
        wiring = ctrl._wiring
        real = (wiring.hypervisors, wiring.drivers)
        wiring.hypervisors = {k: Raising(k) for k in wiring.hypervisors}  # type: ignore[misc]
        wiring.drivers = {k: Raising(k) for k in wiring.drivers}  # type: ignore[misc]
        try:
            assert ctrl.audit_verify().ok
            assert len(list(ctrl.audit_export())) == info["events"]
            assert ctrl.audit_timeline(vm_id="vm-kvm")
            assert ctrl.audit_state(info["kvm"], 1_000_000).state == "removed"
        finally:
            wiring.hypervisors, wiring.drivers = real


# -- encryption and compression at rest ----------------------------------------------------


def at_rest_config(tmp_path: Path, *lines: str) -> Path:
    config = write_config(tmp_path, world_config())
    text = config.read_text().replace("[store]\n", "[store]\n" + "".join(f"{x}\n" for x in lines))
    config.write_text(text)
    return config


def key() -> str:
    return base64.b64encode(b"k" * 32).decode()


@needs("cryptography")
def test_events_are_encrypted_and_compressed_at_rest_and_still_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMSNAP_CIPHER_KEY", key())
    config = at_rest_config(tmp_path, 'cipher = "aes"', "compress = true")
    with Controller.from_config(config) as ctrl:
        snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
        assert ctrl.audit_verify().ok
        assert ctrl.audit_timeline(snapshot_id=snap.id)[0].data["vm_id"] == "vm-kvm"
    with sqlite3.connect(tmp_path / STORE_FILE) as conn:
        states = [s for (s,) in conn.execute(f"SELECT state FROM {EVENTS}")]
    assert states and not any(b"vm-kvm" in s for s in states)

    monkeypatch.setenv("VMSNAP_CIPHER_KEY", base64.b64encode(b"w" * 32).decode())
    with pytest.raises(StoreError, match="wrong \\$VMSNAP_CIPHER_KEY"):
        Controller.from_config(config)
    monkeypatch.delenv("VMSNAP_CIPHER_KEY")
    with pytest.raises(ConfigError, match="VMSNAP_CIPHER_KEY"):
        Controller.from_config(config)
    # An embedding controller may hand the key over itself.
    with Controller.from_config(config, cipher_key=key()) as ctrl:
        assert ctrl.get_vm_snapshot(snap.id).state == "ready"


def test_compression_alone_stores_zlib_and_a_store_read_without_it_is_refused(
    tmp_path: Path,
) -> None:
    config = at_rest_config(tmp_path, "compress = true")
    with Controller.from_config(config) as ctrl:
        ctrl.create_vm_snapshot("vm-vmware")
        assert ctrl.audit_verify().ok
    with sqlite3.connect(tmp_path / STORE_FILE) as conn:
        states = [s for (s,) in conn.execute(f"SELECT state FROM {EVENTS}")]
    assert all(s[:1] == b"x" for s in states)  # the zlib header
    plain = write_config(tmp_path, world_config(), "plain.toml")
    with pytest.raises(StoreError, match="cipher/compress"):
        Controller.from_config(plain)


@pytest.mark.parametrize(
    ("lines", "env", "message"),
    [
        (['cipher = "aes"'], None, "needs its key in \\$VMSNAP_CIPHER_KEY"),
        (['cipher = "aes"'], "not base64!", "base64 of 16, 24 or 32 bytes"),
        (['cipher = "aes"'], base64.b64encode(b"short").decode(), "16, 24 or 32"),
        (['cipher = "rot13"'], None, "cipher must be one of aes"),
        (['cipher = "aes"', 'cipher_key = "abc"'], None, "never goes in the config"),
        (["compress = 1"], None, "compress must be true or false"),
    ],
)
def test_bad_at_rest_settings_are_refused_with_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    lines: list[str],
    env: str | None,
    message: str,
) -> None:
    from vmsnap.cli import main

    if env is None:
        monkeypatch.delenv("VMSNAP_CIPHER_KEY", raising=False)
    else:
        monkeypatch.setenv("VMSNAP_CIPHER_KEY", env)
    config = at_rest_config(tmp_path, *lines)
    assert main(["--config", str(config), "vm-snapshots", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / STORE_FILE).exists()


# -- the command line ----------------------------------------------------------------------


def test_the_state_command_prints_the_contract_shape_and_refuses_what_did_not_exist(
    store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmsnap.cli import main

    _, info = store
    config = ["--config", str(info["config"])]
    first = min(info["positions"])
    assert main([*config, "audit", "state", info["kvm"], "--at", str(first), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["id"] == info["kvm"] and doc["state"] == "allocated"
    assert {"vm_id", "type", "quiesced", "consistency", "volumes", "current"} <= set(doc)
    for args in ([info["kvm"], "--at", str(first - 1)], [str(uuid.uuid4()), "--at", "5"]):
        assert main([*config, "audit", "state", *args, "--json"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ")


def test_the_human_timeline_shows_how_long_each_vm_was_frozen(
    store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmsnap.cli import main

    _, info = store
    assert main(["--config", str(info["config"]), "audit", "timeline", info["kvm"]]) == 0
    out = capsys.readouterr().out
    frozen_at = position_of(info, "Snapshot.Quiesced")
    thawed_at = position_of(info, "Snapshot.Unquiesced")
    assert re.search(
        rf"vm-kvm frozen \d+\.\dms by snapshot {info['kvm']} "
        rf"\(positions {frozen_at}-{thawed_at}\)",
        out,
    ), out
    assert main(["--config", str(info["config"]), "audit", "timeline", info["vmware"]]) == 0
    assert "frozen: never" in capsys.readouterr().out
