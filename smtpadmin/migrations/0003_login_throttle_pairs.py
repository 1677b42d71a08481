from typing import Any

from django.db import migrations, models


def forget_counts(apps: Any, schema_editor: Any) -> None:
    # The old rows are keyed by name or by address alone; they cannot become pairs. Counts
    # last minutes, so starting afresh loses nothing worth keeping.
    apps.get_model("smtpadmin", "LoginThrottle").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("smtpadmin", "0002_login_throttle"),
    ]

    operations = [
        migrations.RunPython(forget_counts, migrations.RunPython.noop),
        migrations.RemoveField(model_name="loginthrottle", name="key"),
        migrations.AddField(
            model_name="loginthrottle",
            name="scope",
            field=models.CharField(
                choices=[("console", "Console and API"), ("smtp", "SMTP AUTH")],
                default="console",
                max_length=10,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="loginthrottle",
            name="username",
            field=models.CharField(default="", max_length=250),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="loginthrottle",
            name="client",
            field=models.CharField(blank=True, max_length=250),
        ),
        migrations.AddConstraint(
            model_name="loginthrottle",
            constraint=models.UniqueConstraint(
                fields=("scope", "username", "client"), name="login_throttle_one_row_per_pair"
            ),
        ),
    ]
