"""
The audit reads and never writes (#15): the store's bytes are unchanged by every audit
command, a store that does not exist is refused, nothing is sealed by verify. An export
alone verifies the log, and finds any line changed, dropped, moved or inserted. Every
operation records who asked, why, and under which request.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration.tamper_fixtures import Store, sqlite_template
from vmsnap.cli import main

__all__ = ["sqlite_template"]


@pytest.fixture
def copy(sqlite_template: tuple[Path, dict[str, Any]], tmp_path: Path) -> Store:
    import shutil

    folder, info = sqlite_template
    shutil.copytree(folder, tmp_path / "store")
    config = tmp_path / "store" / "vmsnap.toml"
    return Store("sqlite", config, f"sqlite:///{tmp_path / 'store' / 'vmsnap.db'}", info)


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(capsys: Any, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_every_audit_command_leaves_the_store_folder_byte_for_byte(
    copy: Store, capsys: Any
) -> None:
    folder = copy.config.parent
    before = fingerprint(folder)
    sid = copy.info["kvm"]
    for args in (
        ["verify"],
        ["timeline", sid],
        ["timeline", "--vm", "vm-kvm"],
        ["state", sid, "--at", "5"],
        ["export"],
    ):
        code, _ = copy.audit(capsys, *args)
        assert code == 0, args
    folder.chmod(0o555)
    try:
        code, report = copy.audit(capsys, "verify")
    finally:
        folder.chmod(0o755)
    assert code == 0 and report["ok"]
    assert fingerprint(folder) == before


def test_verify_reports_unsealed_events_and_seals_nothing(copy: Store, capsys: Any) -> None:
    p = copy.position_of("Snapshot.Completed")
    copy.sql("DELETE FROM event_chain WHERE position>=?", (p,))
    (before,) = copy.sql("SELECT COUNT(*) FROM event_chain")
    code, report = copy.audit(capsys, "verify")
    assert code == 1
    last = copy.last()
    assert report["unsealed"] == {"events": last - p + 1, "first": p, "last": last}
    assert copy.sql("SELECT COUNT(*) FROM event_chain") == [before]


@pytest.mark.parametrize("url", ["sqlite:///typo.db", "memory://"])
def test_an_audit_of_a_store_that_does_not_exist_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMSNAP_CONFIG", raising=False)
    for command in (["verify"], ["export"], ["timeline", "--vm", "vm-1"]):
        code, out = run(capsys, "--store", url, "audit", *command, "--json")
        assert (code, out) == (2, "")
    assert list(tmp_path.iterdir()) == []


def exported_lines(copy: Store, capsys: Any) -> list[str]:
    code, out = copy.audit(capsys, "export")
    assert code == 0
    return out.splitlines()


def verify_export(
    tmp_path: Path, capsys: Any, lines: list[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out = run(capsys, "audit", "verify", "--from-export", str(path), *extra, "--json")
    return code, json.loads(out)


def test_an_export_alone_verifies_without_config_or_store(
    copy: Store, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = exported_lines(copy, capsys)
    first = json.loads(lines[0])
    assert {"stored", "digest", "hash"} <= set(first)
    _, report = copy.audit(capsys, "verify")
    head = report["chain_head"]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.delenv("VMSNAP_CONFIG", raising=False)
    monkeypatch.delenv("VMSNAP_STORE", raising=False)
    kept = f"{head['position']}:{head['hash']}"
    code, offline = verify_export(tmp_path, capsys, lines, "--expect-head", kept)
    assert (code, offline["problems"], offline["chain_head"]) == (0, [], head)
    code, offline = verify_export(tmp_path, capsys, lines, "--expect-head", f"3:{'0' * 64}")
    assert code == 1
    assert offline["problems"][0].startswith("position 3: the chain does not pass through")


def test_an_export_with_a_changed_line_is_found(copy: Store, capsys: Any, tmp_path: Path) -> None:
    lines = exported_lines(copy, capsys)
    p = copy.position_of("VmSnapshot.DriverSnapshotTaken")
    doc = json.loads(lines[p - 1])
    doc["data"]["need_unquiesce"] = not doc["data"]["need_unquiesce"]
    lines[p - 1] = json.dumps(doc)
    code, report = verify_export(tmp_path, capsys, lines)
    assert code == 1
    assert (
        f"position {p}: line changed (its data differ from its stored bytes)"
        in (report["problems"])
    )


def test_an_export_with_a_dropped_line_is_found(copy: Store, capsys: Any, tmp_path: Path) -> None:
    lines = exported_lines(copy, capsys)
    p = copy.position_of("Snapshot.Quiesced")
    del lines[p - 1]
    _, report = verify_export(tmp_path, capsys, lines)
    assert report["problems"][0] == (
        f"position {p + 1}: the chain breaks here: a line before it was dropped or moved, "
        "or this line was changed"
    )


def test_an_export_with_moved_lines_is_found(copy: Store, capsys: Any, tmp_path: Path) -> None:
    lines = exported_lines(copy, capsys)
    p = copy.position_of("Snapshot.Quiesced")
    lines[p - 1], lines[p] = lines[p], lines[p - 1]
    _, report = verify_export(tmp_path, capsys, lines)
    assert (
        f"position {p} (line {p + 1}): after position {p + 1}: lines reordered"
        in (report["problems"])
    )


def test_an_export_with_an_inserted_line_is_found(copy: Store, capsys: Any, tmp_path: Path) -> None:
    lines = exported_lines(copy, capsys)
    p = copy.position_of("Snapshot.Quiesced")
    forged = json.loads(lines[p - 1])
    forged["position"] = p  # squeezed in before the real one, with a made-up seal
    forged["hash"] = "ab" * 32
    lines.insert(p - 1, json.dumps(forged))
    _, report = verify_export(tmp_path, capsys, lines)
    assert f"position {p}: line inserted (it is not part of the chain)" in report["problems"]


def test_who_why_and_which_request_are_on_the_first_event_of_each_operation(
    copy: Store, capsys: Any
) -> None:
    code, events = copy.audit(capsys, "timeline", copy.info["kvm"])
    assert code == 0
    by_type = {e["type"]: e["data"] for e in events}
    assert (
        by_type["VmSnapshot.Requested"]["actor"],
        by_type["VmSnapshot.Requested"]["reason"],
    ) == ("alice", "upgrade")
    revert = by_type["VmSnapshot.RevertStarted"]
    assert (revert["actor"], revert["reason"], revert["correlation_id"]) == (
        "bob",
        "rollback",
        "T-7",
    )
    lines = [json.loads(x) for x in exported_lines(copy, capsys)]
    claims = [x["data"] for x in lines if x["type"] == "Vm.OperationStarted"]
    assert {"actor": "bob", "reason": "rollback", "correlation_id": "T-7"}.items() <= next(
        c for c in claims if c["operation"] == "revert"
    ).items()


def test_the_cli_records_the_os_user_and_host_its_reason_and_correlation_id(
    copy: Store, capsys: Any
) -> None:
    code, out = run(
        capsys,
        "--config",
        str(copy.config),
        "snapshots",
        "create",
        "--volume",
        "vmw-data",
        "--reason",
        "nightly",
        "--correlation-id",
        "CHG-1",
        "--json",
    )
    assert code == 0, out
    sid = json.loads(out)["id"]
    _, events = copy.audit(capsys, "timeline", sid)
    data = events[0]["data"]
    expected_actor = f"{getpass.getuser()}@{socket.gethostname()}"
    assert (data["actor"], data["reason"], data["correlation_id"]) == (
        expected_actor,
        "nightly",
        "CHG-1",
    )


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("cryptography") is None,
    reason="needs the crypto extra: pip install -e '.[crypto]'",
)
def test_swapped_ciphertexts_are_found_because_each_is_bound_to_its_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import base64
    import sqlite3

    from tests.conftest import world_config
    from tests.support import write_config
    from vmsnap import Controller

    monkeypatch.setenv("VMSNAP_CIPHER_KEY", base64.b64encode(b"k" * 32).decode())
    config = write_config(tmp_path, world_config())
    config.write_text(config.read_text().replace("[store]\n", '[store]\ncipher = "aes"\n'))
    with Controller.from_config(config) as ctrl:
        sid = ctrl.create_vm_snapshot("vm-kvm", quiesce=True).id
        positions = {e.type: e.position for e in ctrl.audit_timeline(snapshot_id=sid)}
    p, q = positions["Snapshot.QuiesceStarted"], positions["Snapshot.Completed"]
    db = tmp_path / "vmsnap.db"
    with sqlite3.connect(db) as conn:
        a, b = (
            conn.execute("SELECT state FROM stored_events WHERE rowid=?", (r,)).fetchone()[0]
            for r in (p, q)
        )
        conn.execute("UPDATE stored_events SET state=? WHERE rowid=?", (b, p))
        conn.execute("UPDATE stored_events SET state=? WHERE rowid=?", (a, q))
    capsys.readouterr()
    code = main(["--config", str(config), "audit", "verify", "--json"])
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert code == 1
    for r in (p, q):
        assert any(x.startswith(f"position {r}: the stored event cannot be read") for x in problems)


def test_the_timeline_shows_the_caps_advertised_then_and_json_values_in_full(
    copy: Store, capsys: Any
) -> None:
    code, text = run(capsys, "--config", str(copy.config), "audit", "timeline", copy.info["vmware"])
    assert code == 0
    assert "caps then: " in text
    assert "netapp-1: VOLUME_SNAPSHOT_QUIESCEVM, STORAGE_SYSTEM_SNAPSHOT" in text
    _, events = copy.audit(capsys, "timeline", copy.info["vmware"])
    reason = events[0]["data"]["strategy_reason"]
    assert "..." not in json.dumps(events) and len(json.dumps(events[0]["data"])) > 80
    assert reason.startswith("pools ")


def test_verify_from_an_export_that_cannot_be_read_or_a_bad_head_is_refused(
    tmp_path: Path, capsys: Any
) -> None:
    missing = str(tmp_path / "missing.jsonl")
    assert run(capsys, "audit", "verify", "--from-export", missing, "--json") == (2, "")
    (tmp_path / "e.jsonl").write_text("not json\n", encoding="utf-8")
    path = str(tmp_path / "e.jsonl")
    argv = ["audit", "verify", "--from-export", path, "--json"]
    assert run(capsys, *argv, "--expect-head", "nope") == (2, "")
    code, out = run(capsys, *argv)
    assert code == 1
    assert json.loads(out)["problems"][0].startswith("line 1: not an exported event")
