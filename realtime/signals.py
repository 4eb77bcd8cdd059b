"""Signals a project can connect to; each fires once per transition, after commit.

``presence_joined`` / ``presence_left`` fire when a member's first connection joins a stream's
presence and when its last one leaves (not once per tab). ``user_online`` / ``user_offline``
fire when a user's first connection anywhere opens and when their last one closes, across
every server process — also when a crashed process's connections are swept. Receivers run in
the process that made the change, in a thread where the ORM may be used.

    from django.dispatch import receiver
    from realtime.signals import user_offline

    @receiver(user_offline)
    def remember_last_seen(sender, user, **kwargs):
        Profile.objects.filter(user=user).update(last_seen=timezone.now())
"""

from __future__ import annotations

from django.dispatch import Signal

# sender=PresenceMember; kwargs: stream, key, user (or None), meta
presence_joined = Signal()
# sender=PresenceMember; kwargs: stream, key, user (or None)
presence_left = Signal()
# sender=UserStatus; kwargs: user
user_online = Signal()
# sender=UserStatus; kwargs: user
user_offline = Signal()
# sender=None; kwargs: name, value, threshold, server — a threshold in REALTIME["ALERTS"] was
# crossed on this process (sent once per crossing, not on every check)
alert_raised = Signal()
# sender=None; kwargs: name, value, threshold, server — back under the threshold
alert_cleared = Signal()
