from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("live_capture", "0003_labels_and_inheritance"),
    ]

    operations = [
        migrations.CreateModel(
            name="LabelProxy",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("live_capture.label",),
        ),
    ]
