"""The BTC cap ledger rule: the remaining capacity, split across slots.

The cap is enforced in the write-model database (`adapters.write_model`): the
capacity still available is held in several rows ("slots") so that concurrent
orders lock different rows instead of queueing on one. The slots always add up
to `cap - sum(bitcoin_amount of stored orders)` (floored at zero when the cap
is lowered below what is already used). An order that does not fit in its
slot locks every slot in one transaction and spreads the total again; these
functions compute that spread. Amounts are integer satoshis.
"""

# The ledger's `cap_ledger.cap_satoshis` and `cap_slot.remaining_satoshis` are bigint
# (write-model migration 0001): no cap above this is storable (BTC_CAP at most 92233720368.54775807).
MAX_CAP_SATOSHIS = 2**63 - 1


def spread(total: int, slots: int) -> list[int]:
    """Split `total` satoshis over `slots` rows as evenly as integers allow.

    The parts are non-negative, differ by at most one, and add up to `total`.
    """
    if slots < 1:
        raise ValueError("at least one slot is needed")
    if total < 0:
        raise ValueError("capacity cannot be negative")
    share, rest = divmod(total, slots)
    return [share + (1 if index < rest else 0) for index in range(slots)]


def remaining(cap: int, used: int) -> int:
    """Capacity left under `cap` when stored orders use `used` satoshis.

    A cap lowered below what is used leaves nothing: stored orders are never undone.
    """
    return max(cap - used, 0)
