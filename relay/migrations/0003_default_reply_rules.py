# The default reply classification rules (relay.queue.rules.DEFAULT_RULES as of this
# migration, copied so that later edits there do not rewrite history).

from django.db import migrations

DEFAULT_RULES = [
    {
        "order": 10,
        "status": "5.2.2",
        "action": "retry",
        "note": "Mailbox full: retried until the message expires, since the owner may make room.",
    },
    {
        "order": 15,
        "code": "53",
        "action": "retry",
        "note": "The next hop refused our authentication (530-538): a setting to fix on our side, not the recipient's fault; retried until fixed or expired.",
    },
    {
        "order": 20,
        "pattern": r"grey-?list|gray-?list",
        "action": "retry",
        "note": "Greylisting, even when a server says it with a 5xx code.",
    },
    {
        "order": 30,
        "pattern": r"try again later|temporar(il)?y",
        "code": "5",
        "action": "retry",
        "note": 'A 5xx reply that calls itself temporary ("try again later").',
    },
    {"order": 900, "code": "4", "action": "retry", "note": "Temporary failure (RFC 5321)."},
    {"order": 910, "code": "5", "action": "fail", "note": "Permanent failure (RFC 5321)."},
]


def seed(apps, schema_editor):
    ReplyRule = apps.get_model("relay", "ReplyRule")
    if ReplyRule.objects.exists():
        return
    ReplyRule.objects.bulk_create(ReplyRule(**rule) for rule in DEFAULT_RULES)


def unseed(apps, schema_editor):
    ReplyRule = apps.get_model("relay", "ReplyRule")
    for rule in DEFAULT_RULES:
        ReplyRule.objects.filter(**rule).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("relay", "0002_replyrule"),
    ]

    operations = [
        migrations.RunPython(seed, unseed),
    ]
