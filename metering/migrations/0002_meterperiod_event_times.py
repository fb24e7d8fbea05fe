from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('metering', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='meterperiod',
            name='first_event_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='meterperiod',
            name='last_event_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='meterperiod',
            index=models.Index(fields=['operator', 'meter_type', 'meter_key', 'user_id', 'period_start'], name='period_identity_idx'),
        ),
    ]
