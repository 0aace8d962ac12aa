"""FileStore: sequence numbers and resendable messages survive a crash."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.core.fix.store import MemoryStore
from gateway.edges.store import FileStore, session_dir_name


def test_sequence_numbers_and_messages_survive_reopen(tmp_path: Path) -> None:
    s = FileStore(tmp_path / "s")
    for seq in range(1, 6):
        s.save_sent(seq, b"msg%d" % seq)
        s.set_next_sender_seq(seq + 1)
    s.set_next_target_seq(42)
    s.close()
    r = FileStore(tmp_path / "s")
    assert r.next_sender_seq() == 6 and r.next_target_seq() == 42
    assert r.get_sent(2, 4) == [(2, b"msg2"), (3, b"msg3"), (4, b"msg4")]


def test_torn_last_record_is_truncated(tmp_path: Path) -> None:
    s = FileStore(tmp_path / "s")
    s.save_sent(1, b"complete")
    s.set_next_sender_seq(2)
    s.close()
    with open(tmp_path / "s" / "messages.log", "ab") as f:
        f.write(b"\x02\x00\x00\x00\x00\x00\x00\x00\x10\x00")  # half a header
    r = FileStore(tmp_path / "s")
    assert r.recovered_bytes == 10
    assert r.get_sent(1, 9) == [(1, b"complete")]
    r.save_sent(2, b"next")
    r.close()
    assert FileStore(tmp_path / "s").get_sent(1, 9) == [(1, b"complete"), (2, b"next")]


def test_torn_seqnum_slot_falls_back_to_the_other_slot(tmp_path: Path) -> None:
    s = FileStore(tmp_path / "s")
    s.set_next_target_seq(7)   # generation 1 -> slot 1
    s.set_next_target_seq(8)   # generation 2 -> slot 0
    s.close()
    fd = os.open(tmp_path / "s" / "seqnums", os.O_RDWR)
    os.pwrite(fd, b"\xff" * 8, 8)  # damage slot 0 (the newest)
    os.close(fd)
    assert FileStore(tmp_path / "s").next_target_seq() == 7


def test_reset_clears_everything(tmp_path: Path) -> None:
    s = FileStore(tmp_path / "s")
    s.save_sent(1, b"x")
    s.set_next_sender_seq(2)
    s.reset()
    assert (s.next_sender_seq(), s.next_target_seq(), s.get_sent(1, 10)) == (1, 1, [])


def test_session_dir_names_are_safe() -> None:
    assert session_dir_name(b"FIX.4.4", b"A/B", b"..") == "FIX.4.4-A%2FB-.."


@pytest.mark.parametrize("make", ["memory", "file"])
def test_get_sent_reads_a_range_a_limited_number_at_a_time_in_order(tmp_path: Path, make: str) -> None:
    """A resend reads its range a chunk at a time (issue 15, item 4): ``limit`` messages from ``begin``."""
    store: MemoryStore | FileStore = MemoryStore() if make == "memory" else FileStore(tmp_path / "s")
    for seq in (5, 2, 9, 7, 3):  # saved out of order: still returned in order
        store.save_sent(seq, b"m%d" % seq)
    store.save_sent(7, b"m7 again")  # saved twice: once in the index, the last one wins
    assert store.get_sent(1, 100) == [(2, b"m2"), (3, b"m3"), (5, b"m5"), (7, b"m7 again"), (9, b"m9")]
    assert store.get_sent(3, 8, 2) == [(3, b"m3"), (5, b"m5")]
    assert store.get_sent(6, 100, 1) == [(7, b"m7 again")]
    assert store.get_sent(10, 100, 5) == [] and store.get_sent(1, 100, 0) == []
    if isinstance(store, FileStore):
        store.close()
        again = FileStore(tmp_path / "s")
        assert again.get_sent(4, 9, 2) == [(5, b"m5"), (7, b"m7 again")]
        again.reset()
        assert again.get_sent(1, 100) == []
        again.close()


_OPS = st.lists(st.one_of(
    st.just(("app",)),  # save_sent(n) + set_next_sender_seq(n + 1), as the session sends a message
    st.just(("admin",)),  # set_next_sender_seq(n + 1) alone (Heartbeat, Logon ...: not logged)
    st.integers(1, 5).map(lambda n: ("target", n)),  # the next target number moves up by n (only a reset lowers it)
    st.just(("commit",)),
    st.just(("reset",)),
    st.just(("crash",)),  # a fresh FileStore on the folder, the old one never closed
), max_size=40)


@given(_OPS, st.booleans())
@example([("app",)] * 5 + [("reset",)] + [("app",)] * 4 + [("admin",), ("crash",)], False)  # the log forgets at reset
@settings(max_examples=150, deadline=None)
def test_what_a_crash_leaves_is_what_was_written_before_it(ops: list[tuple[int | str, ...]], deferred: bool) -> None:
    """The store leaves writes out (the ``lseek``, a slot the log already proves, a deferred target
    number until ``commit``); at any point a crash leaves: the next sender number and every message
    exactly, and a next target number no older than the last commit (deferred) or exactly (not)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "s"
        store = FileStore(folder, deferred_target=deferred)
        sender, target, committed, messages = 1, 1, 1, {}
        opened = [store]
        for op in ops:
            if op[0] == "app":
                raw = b"msg%d" % sender
                store.save_sent(sender, raw)
                messages[sender] = raw
                sender += 1
                store.set_next_sender_seq(sender)
            elif op[0] == "admin":
                sender += 1
                store.set_next_sender_seq(sender)
            elif op[0] == "target":
                target += int(op[1])
                store.set_next_target_seq(target)
                if not deferred:
                    committed = target
            elif op[0] == "commit":
                store.commit()
                committed = target
            elif op[0] == "reset":
                store.reset()
                sender, target, committed, messages = 1, 1, 1, {}
            else:
                again = FileStore(folder, deferred_target=deferred)
                opened.append(again)
                assert again.next_sender_seq() == sender
                assert committed <= again.next_target_seq() <= target if deferred else again.next_target_seq() == target
                assert dict(again.get_sent(1, 10**6)) == messages
                store, committed, target = again, again.next_target_seq(), again.next_target_seq()
        store.close()
        after = FileStore(folder)  # a clean close commits
        assert (after.next_sender_seq(), after.next_target_seq(), dict(after.get_sent(1, 10**6))) == (
            sender, target, messages)
        for s in (*opened, after):
            s.close()


def _raw(seq: int) -> bytes:
    return b"8=FIX.4.4\x019=5\x0135=D\x0134=%d\x01" % seq


def test_a_batch_is_one_write_and_tells_its_callbacks_once_it_is_in_the_os(tmp_path: Path) -> None:
    from gateway.edges.store import close_batch, open_batch

    s = FileStore(tmp_path / "s", deferred_target=True, batched=True)
    told: list[str] = []
    open_batch()
    for seq in range(1, 6):
        s.save_sent(seq, _raw(seq))
        s.set_next_sender_seq(seq + 1)
        s.after_flush(lambda seq=seq: told.append(f"ok {seq}"), lambda exc: told.append(f"failed {exc}"))
    assert s.log_writes == 0 and told == []  # held: nothing in the OS yet, nobody told
    assert close_batch() == []
    assert s.log_writes == 1 and told == [f"ok {n}" for n in range(1, 6)]
    s.after_flush(lambda: told.append("now"), lambda exc: told.append("never"))  # nothing held: at once
    assert told[-1] == "now"
    s.close()
    again = FileStore(tmp_path / "s")
    assert again.next_sender_seq() == 6 and [q for q, _ in again.get_sent(1, 5)] == [1, 2, 3, 4, 5]
    assert again.get_sent(3, 3) == [(3, _raw(3))]


def test_a_batch_that_cannot_be_written_rolls_back_and_says_so(tmp_path: Path) -> None:
    from gateway.edges.store import close_batch, open_batch

    s = FileStore(tmp_path / "s", deferred_target=True, batched=True)
    s.save_sent(1, _raw(1))
    s.set_next_sender_seq(2)
    told: list[str] = []
    keep = os.dup(s._log_fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, s._log_fd)  # every write to the log now fails with ENOSPC, as on a full disk
    os.close(full)
    open_batch()
    for seq in (2, 3):
        s.save_sent(seq, _raw(seq))
        s.set_next_sender_seq(seq + 1)
        s.after_flush(lambda: told.append("ok"), lambda exc: told.append(f"failed {exc.errno}"))
    failed = close_batch()
    assert [(store, err.errno) for store, err in failed] == [(s, 28)]
    assert told == ["failed 28", "failed 28"]
    # back to what is on disk: the next number, the index, the log
    assert s.next_sender_seq() == 2
    os.dup2(keep, s._log_fd)  # the disk has room again
    os.close(keep)
    assert s.get_sent(1, 10) == [(1, _raw(1))]
    s.save_sent(2, _raw(2))
    s.set_next_sender_seq(3)
    s.close()
    again = FileStore(tmp_path / "s")
    assert again.next_sender_seq() == 3 and again.get_sent(1, 10) == [(1, _raw(1)), (2, _raw(2))]


def test_a_slot_write_inside_a_batch_writes_the_held_records_first(tmp_path: Path) -> None:
    """The log before the slot, as without a batch: a slot never names a number whose message is not in
    the log before it (a crash in between would otherwise lose a message the peer may ask for)."""
    from gateway.edges.store import close_batch, open_batch

    s = FileStore(tmp_path / "s", deferred_target=True, batched=True)
    open_batch()
    s.save_sent(1, _raw(1))
    s.set_next_sender_seq(2)  # proven by the message: no slot write, still held
    assert s.log_writes == 0
    s.set_next_sender_seq(3)  # an admin message that is not stored: the slot is written, the log first
    assert s.log_writes == 1 and FileStore(tmp_path / "s").get_sent(1, 1) == [(1, _raw(1))]
    assert close_batch() == []
    s.close()


def test_a_store_that_is_not_batched_writes_at_once_inside_a_batch(tmp_path: Path) -> None:
    from gateway.edges.store import close_batch, open_batch

    s = FileStore(tmp_path / "s")
    open_batch()
    try:
        s.save_sent(1, _raw(1))
        assert s.log_writes == 1
    finally:
        assert close_batch() == []
    s.close()
