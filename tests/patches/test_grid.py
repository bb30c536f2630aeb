"""Location ids: an ordered hash table gives the same ids for a set of keys in any arrival
order, and the folder moves it sometimes implies keep the release layout consistent."""

from __future__ import annotations

import os
import random

import pytest

from spectralearth.patches.grid import Registry, RegistryError

SLOTS = 23  # a tiny id space forces collisions and moves


def _keys(rng: random.Random, n: int) -> list[str]:
    return [f"32633:128:{rng.randrange(10**6)}:{rng.randrange(10**6)}" for _ in range(n)]


def _insert_in_batches(reg: Registry, keys: list[str], rng: random.Random) -> list:
    moves = []
    i = 0
    while i < len(keys):
        step = rng.randint(1, 4)
        moves += reg.assign_locations(keys[i : i + step])[1]
        i += step
    return moves


@pytest.mark.parametrize("seed", range(6))
def test_ids_do_not_depend_on_arrival_order(tmp_path, seed):
    rng = random.Random(seed)
    keys = _keys(rng, 18)  # 18 keys in 23 slots: long probe runs
    tables = []
    for trial in range(4):
        order = keys[:]
        rng.shuffle(order)
        reg = Registry(tmp_path / f"{trial}.sqlite", location_slots=SLOTS)
        _insert_in_batches(reg, order, rng)
        tables.append(reg.location_ids(keys))
    assert all(t == tables[0] for t in tables)
    assert sorted(tables[0].values()) == sorted(set(tables[0].values()))  # one key per id


def test_moves_are_reported_for_exactly_the_keys_whose_id_changed(tmp_path):
    rng = random.Random(7)
    reg = Registry(tmp_path / "r.sqlite", location_slots=SLOTS)
    seen_moves = 0
    for _ in range(15):
        before = reg.location_ids(_all := list(reg.location_ids(_existing(reg))))
        ids, moves = reg.assign_locations(_keys(rng, 1))
        after = reg.location_ids(_all)
        changed = {k for k in _all if before[k] != after[k]}
        assert {m.key for m in moves} == changed
        assert all(before[m.key] == m.old and after[m.key] == m.new for m in moves)
        seen_moves += len(moves)
        reg.apply_moves(lambda loc: tmp_path / "none" / str(loc))  # no folders: nothing to do
    assert seen_moves > 0, "the tiny id space should have forced at least one move"


def _existing(reg: Registry) -> list[str]:
    import sqlite3

    with sqlite3.connect(reg.path) as con:
        return [r[0] for r in con.execute("SELECT key FROM locations")]


def _check_folders(reg: Registry, root) -> None:
    ids = reg.location_ids(_existing(reg))
    for key, loc in ids.items():
        assert (root / f"{loc:07d}" / "key.txt").read_text() == key
    assert len(list(root.iterdir())) == len(ids)  # nothing parked or left behind


def test_applied_moves_keep_every_folder_with_its_key_even_after_a_crash(tmp_path, monkeypatch):
    rng = random.Random(3)
    root = tmp_path / "enmap"
    root.mkdir()
    reg = Registry(tmp_path / "r.sqlite", location_slots=SLOTS)
    folder = lambda loc: root / f"{loc:07d}"  # noqa: E731
    crashed = False
    for _ in range(18):
        key = _keys(rng, 1)[0]
        with reg.lock():
            reg.apply_moves(folder)
            ids, moves = reg.assign_locations([key])
            if moves and not crashed:  # die after the first rename of a multi-step apply
                real_replace, calls = os.replace, []

                def dying_replace(a, b, calls=calls, real_replace=real_replace):
                    calls.append(a)
                    if len(calls) > 1:
                        raise KeyboardInterrupt("simulated crash")
                    real_replace(a, b)

                monkeypatch.setattr(os, "replace", dying_replace)
                with pytest.raises(KeyboardInterrupt):
                    reg.apply_moves(folder)
                monkeypatch.setattr(os, "replace", real_replace)
                crashed = True
                assert reg.pending_moves()  # the crash left work recorded, not lost
            reg.apply_moves(folder)
            folder(ids[key]).mkdir()
            (folder(ids[key]) / "key.txt").write_text(key)
        _check_folders(reg, root)
    assert crashed, "the tiny id space should have forced a move"


def test_a_registry_of_the_older_arrival_order_rule_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "r.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE locations (key TEXT PRIMARY KEY, id INTEGER UNIQUE)")
        con.execute("INSERT INTO locations VALUES ('32633:128:1:1', 1)")
    with pytest.raises(RegistryError, match="older rule.*clean-data"):
        Registry(path)


def test_the_id_space_is_part_of_the_rule(tmp_path):
    Registry(tmp_path / "r.sqlite", location_slots=SLOTS)
    with pytest.raises(RegistryError, match="rule"):
        Registry(tmp_path / "r.sqlite")
