"""Global client and task keys."""

import pytest

from treelora.fed.keys import client_id, is_valid_client_id, local_key, owner, owns, position, task_key


def test_keys_round_trip():
    c = client_id(3)
    assert (c, local_key(2), task_key(c, 2)) == ("c3", "t2", "c3/t2")
    assert owner("c3/t2") == "c3" and position("c3/t2") == 2 and position("t7") == 7
    assert owns("c3", "c3/t0") and not owns("c3", "c31/t0")
    assert is_valid_client_id("c0") and not is_valid_client_id("") and not is_valid_client_id("c0/t1")
    with pytest.raises(ValueError, match="not a task key"):
        position("acc/anything")
