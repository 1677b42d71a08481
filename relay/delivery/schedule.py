"""A connector's connection schedule (Delivery Options tab): may it open a connection now?

Times are the installation's local time (``TIME_ZONE``), as an administrator reads the grid.
The schedule says when connections may *start*, as in Exchange: a connection opened inside
the window finishes its batch even if the window closes meanwhile.

The fixed modes are windows of one quarter hour, the grid's resolution, as Exchange 2003
turns them into its own schedule grid: "every hour" opens at minute 0 to 14 of every hour,
"every 2 hours" at 00:00, 02:00, ..., "every 4 hours" at 00:00, 04:00, ..., "daily at" in the
quarter hour that starts at that time.
"""

from __future__ import annotations

from datetime import datetime, time

from django.utils import timezone

from connectors.models import Connector, ScheduleMode
from smtpadmin.validators import SCHEDULE_SLOTS, SCHEDULE_SLOTS_PER_DAY

SLOT_MINUTES = 24 * 60 // SCHEDULE_SLOTS_PER_DAY  # 15
_EVERY_HOURS = {
    ScheduleMode.EVERY_HOUR: 1,
    ScheduleMode.EVERY_2_HOURS: 2,
    ScheduleMode.EVERY_4_HOURS: 4,
}


def grid_slot(local: datetime) -> int:
    """The grid position of a local time: Monday 00:00 is 0, one slot per quarter hour."""
    minute_of_day = local.hour * 60 + local.minute
    return local.weekday() * SCHEDULE_SLOTS_PER_DAY + minute_of_day // SLOT_MINUTES


def schedule_open(mode: str, grid: str, daily_time: time | None, local: datetime) -> bool:
    """Whether a schedule lets a connection start at ``local`` (a local wall-clock time). Pure.

    A custom grid that is not 672 characters (the model refuses that on save) counts as
    closed, like "never": an unreadable schedule must not send mail at unwanted times."""
    if mode == ScheduleMode.ALWAYS:
        return True
    if mode == ScheduleMode.NEVER:
        return False
    if mode in _EVERY_HOURS:
        return local.hour % _EVERY_HOURS[ScheduleMode(mode)] == 0 and local.minute < SLOT_MINUTES
    if mode == ScheduleMode.DAILY:
        if daily_time is None:
            return False
        start = daily_time.hour * 60 + daily_time.minute
        now = local.hour * 60 + local.minute
        return 0 <= (now - start) % (24 * 60) < SLOT_MINUTES
    if mode == ScheduleMode.CUSTOM:
        return len(grid) == SCHEDULE_SLOTS and grid[grid_slot(local)] == "1"
    return False


def is_oversize(connector: Connector, size: int) -> bool:
    """Whether a message of ``size`` bytes follows the connector's oversize schedule."""
    return connector.oversize_schedule_enabled and size > connector.oversize_threshold_kb * 1024


def windows_open(connector: Connector, now: datetime) -> tuple[bool, bool]:
    """(normal messages may go, oversize messages may go) at ``now``. Without a separate
    oversize schedule, big messages follow the normal one."""
    local = timezone.localtime(now)
    normal = schedule_open(
        connector.schedule_mode, connector.schedule_grid, connector.schedule_daily_time, local
    )
    if not connector.oversize_schedule_enabled:
        return normal, normal
    oversize = schedule_open(
        connector.oversize_schedule_mode,
        connector.oversize_schedule_grid,
        connector.oversize_schedule_daily_time,
        local,
    )
    return normal, oversize
