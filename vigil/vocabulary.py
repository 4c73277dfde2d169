"""The domain's words, one ``StrEnum`` each.

The same values appear in SQL CHECK constraints (``store/migrations``), request models
(``webapp/schemas.py``), Lua arguments and push payloads. A ``StrEnum`` member *is* its
string, so it goes into a psycopg parameter, a JSON body or a Redis argument unchanged;
``tests/test_vocabulary.py`` checks every CHECK constraint against these enums.
"""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """Where an event is in its life (``events.status``)."""

    QUEUED = "queued"  # stored, waiting in the candidate set
    PROCESSING = "processing"  # leased to a deep batch
    ANALYZED = "analyzed"  # detections committed
    SKIPPED = "skipped"  # expired before a deep worker could take it
    FAILED = "failed"  # could not be analysed (fetch, decode, attempts exhausted)


SETTLED_STATUSES = frozenset({EventStatus.ANALYZED, EventStatus.SKIPPED, EventStatus.FAILED})


class DecisionKind(StrEnum):
    """What the digest did with an event (``events.digest``)."""

    ALERT = "alert"
    FAILSAFE = "failsafe"
    SUMMARY = "summary"
    SUPPRESSED = "suppressed"


class Reason(StrEnum):
    """Why the digest decided so (``events.digest_reason``); docs/notifications.md."""

    LIFE_SAFETY = "life_safety"
    ARMED = "armed"
    COOLDOWN = "cooldown"
    QUIET_HOURS = "quiet_hours"
    BUDGET = "budget"
    NOT_ARMED = "not_armed"
    ROUTINE = "routine"
    BELOW_THRESHOLD = "below_threshold"
    ZONE = "zone"  # what would alert stood outside the camera's alert zones, or in an ignore zone
    STATIONARY = "stationary"  # what would alert was an object that stayed put
    SNOOZED = "snoozed"  # every member who would hear of it snoozed it


class NotificationKind(StrEnum):
    """An alert about one event, or a summary of several (``notifications.kind``)."""

    ALERT = "alert"
    SUMMARY = "summary"


class DeliveryStatus(StrEnum):
    """One push of one notification to one device (``deliveries.status``)."""

    PENDING = "pending"  # due now or after its backoff
    SENDING = "sending"  # leased to a sender
    SENT = "sent"
    FAILED = "failed"  # attempts exhausted or refused for good
    INVALID_TOKEN = "invalid_token"  # the provider no longer knows the device


class ArmMode(StrEnum):
    """A home's alarm state (``homes.arm_mode``)."""

    DISARMED = "disarmed"
    HOME = "home"
    AWAY = "away"
    NIGHT = "night"


ARMED_MODES = frozenset({ArmMode.HOME, ArmMode.AWAY, ArmMode.NIGHT})
FULLY_ARMED = frozenset({ArmMode.AWAY, ArmMode.NIGHT})


class EventMode(StrEnum):
    """What a client says an event is for (``events.mode``); the source sends "security"."""

    SECURITY = "security"
    MONITORING = "monitoring"
    TEST = "test"


class Tier(StrEnum):
    """A home's subscription tier (``homes.tier``): its share of deep analysis."""

    STANDARD = "standard"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


class DeviceKind(StrEnum):
    CAMERA = "camera"
    PHONE = "phone"


class Platform(StrEnum):
    """Where a device's pushes go (``devices.platform``)."""

    IOS = "ios"  # APNs (or FCM, which relays to APNs)
    ANDROID = "android"  # FCM
    WEB = "web"  # FCM
    CAMERA = "camera"  # never pushed to


PUSH_PLATFORMS = (Platform.IOS, Platform.ANDROID, Platform.WEB)


class PresenceGroup(StrEnum):
    """What a detection means to a household: the groups alerts and summaries speak of."""

    PERSON = "person"
    VEHICLE = "vehicle"
    ANIMAL = "animal"


class RevokedReason(StrEnum):
    """Why a login session ended (``sessions.revoked_reason``)."""

    LOGOUT = "logout"
    REFRESH_REUSED = "refresh_reused"
    USER_DISABLED = "user_disabled"


class Role(StrEnum):
    """What a member may do in a home (``home_members.role``); docs/households.md."""

    OWNER = "owner"  # everything: tier, members, policy, deletion
    MEMBER = "member"  # arm and disarm, events, their own phones and notifications
    VIEWER = "viewer"  # events and snapshots of the cameras they may see


class AuditAction(StrEnum):
    """What the audit trail records (``audit.action``)."""

    ARM_MODE_CHANGED = "arm_mode_changed"
    HOME_CHANGED = "home_changed"  # quiet hours, time zone, name, escalation delay
    POLICY_CHANGED = "policy_changed"
    SNAPSHOT_VIEWED = "snapshot_viewed"
    MEMBER_INVITED = "member_invited"
    MEMBER_JOINED = "member_joined"
    MEMBER_CHANGED = "member_changed"  # role or cameras
    MEMBER_REMOVED = "member_removed"  # removed by an owner, or left
    INVITATION_REVOKED = "invitation_revoked"
    ESCALATION_CHANGED = "escalation_changed"
    ALERT_ACKNOWLEDGED = "alert_acknowledged"


class EscalationStop(StrEnum):
    """Why an escalating alert stopped (``escalations.stopped_reason``)."""

    ACKNOWLEDGED = "acknowledged"  # POST /notifications/<id>/ack, or the push's action
    READ = "read"  # a member opened it
    EVERYONE = "everyone"  # the last step reached every member


class InvitationStatus(StrEnum):
    """Where an invitation stands (computed from ``invitations``' times)."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


class ZoneKind(StrEnum):
    """What a camera's activity zone does (``zones.kind``)."""

    ALERT = "alert"  # detections here may alert (a camera without one alerts everywhere)
    IGNORE = "ignore"  # detections here never alert


class PushAction(StrEnum):
    """What a member can do from an alert's push (``deliveries.action_taken``)."""

    SNOOZE_CAMERA = "snooze_camera"  # no alert from this camera for a while (1 h)
    MUTE_OBJECT = "mute_object"  # "this is my car": an ignore zone for this object's place
    MARK_SEEN = "mark_seen"  # read
    ACKNOWLEDGE = "acknowledge"  # stops an escalation


class DeletionKind(StrEnum):
    """What a deletion job deletes (``deletion_jobs.kind``)."""

    HOME = "home"
    ACCOUNT = "account"


class JobState(StrEnum):
    """Where a deletion job stands (``deletion_jobs.state``)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
