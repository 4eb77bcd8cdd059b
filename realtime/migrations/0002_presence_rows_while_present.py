"""Presence members keep a row only while present: drop the rows of members who left (and
with them the ``present`` flag); index ``PresenceSession.ended_at`` for its retention."""

from typing import Any

from django.db import migrations, models


def drop_departed(apps: Any, schema_editor: Any) -> None:
    # On the database being migrated, which is not always the default one.
    members = apps.get_model("realtime", "PresenceMember").objects
    members.using(schema_editor.connection.alias).filter(present=False).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("realtime", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(drop_departed, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name="presencemember",
            name="realtime_member_present",
        ),
        migrations.RemoveField(
            model_name="presencemember",
            name="present",
        ),
        migrations.AlterField(
            model_name="presencesession",
            name="ended_at",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
    ]
