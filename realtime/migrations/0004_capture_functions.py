"""The SQL functions that PostgreSQL capture triggers share (``realtime.live.triggers``).

``realtime_capture_append(stream, event, data)`` stores an event as ``store.append`` does:
the stream's row is bumped under its lock (created first if missing, with a creation epoch
of the md5 form that ``realtime.storage.epochs`` also accepts), the event inserted with the
next seq and ``clock_timestamp()``, and ``pg_notify('realtime_capture', stream)`` wakes the
servers once the transaction commits. ``realtime_capture_ts`` and ``realtime_capture_time``
encode datetimes and times as ``realtime.protocol.dumps`` does. Nothing on other databases.
"""

from typing import Any

from django.db import migrations

INSTALL = r"""
CREATE OR REPLACE FUNCTION realtime_capture_append(p_stream text, p_event text, p_data jsonb)
RETURNS void LANGUAGE plpgsql AS $realtime$
DECLARE
  v_id bigint;
  v_seq bigint;
  v_hour bigint;
BEGIN
  IF p_stream IS NULL OR length(p_stream) > 200
     OR p_stream !~ '^[A-Za-z0-9][A-Za-z0-9_.:@/=+-]*$' THEN
    RAISE EXCEPTION 'realtime: % is not a valid stream name', p_stream;
  END IF;
  UPDATE realtime_stream SET last_seq = last_seq + 1 WHERE name = p_stream
    RETURNING id, last_seq INTO v_id, v_seq;
  IF NOT FOUND THEN
    v_hour := floor(extract(epoch FROM clock_timestamp()) / 3600);
    INSERT INTO realtime_stream (name, epoch, last_seq, trimmed_seq, created_at)
      VALUES (p_stream,
              lpad(to_hex(v_hour), 6, '0') || substr(md5(v_hour::text || ':' || p_stream), 1, 10),
              0, 0, now())
      ON CONFLICT (name) DO NOTHING;
    UPDATE realtime_stream SET last_seq = last_seq + 1 WHERE name = p_stream
      RETURNING id, last_seq INTO v_id, v_seq;
  END IF;
  INSERT INTO realtime_event (stream_id, seq, event, data, ts)
    VALUES (v_id, v_seq, p_event, p_data, clock_timestamp());
  PERFORM pg_notify('realtime_capture', p_stream);
END
$realtime$;

CREATE OR REPLACE FUNCTION realtime_capture_ts(v timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $realtime$
  SELECT CASE WHEN v IS NULL THEN NULL ELSE to_jsonb(
    to_char(v AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
    || CASE WHEN extract(microseconds FROM v)::bigint % 1000000 = 0 THEN ''
       ELSE '.' || lpad(((extract(microseconds FROM v)::bigint % 1000000) / 1000)::text, 3, '0')
       END
    || 'Z') END
$realtime$;

CREATE OR REPLACE FUNCTION realtime_capture_time(v time) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $realtime$
  SELECT CASE WHEN v IS NULL THEN NULL ELSE to_jsonb(
    to_char(v, 'HH24:MI:SS')
    || CASE WHEN extract(microseconds FROM v)::bigint % 1000000 = 0 THEN ''
       ELSE '.' || lpad(((extract(microseconds FROM v)::bigint % 1000000) / 1000)::text, 3, '0')
       END) END
$realtime$;
"""

REMOVE = """
DROP FUNCTION IF EXISTS realtime_capture_append(text, text, jsonb);
DROP FUNCTION IF EXISTS realtime_capture_ts(timestamptz);
DROP FUNCTION IF EXISTS realtime_capture_time(time);
"""


def _run(sql: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(sql)  # no parameters: the SQL's % signs are its own

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("realtime", "0003_event_stream_index_dropped"),
    ]

    operations = [
        migrations.RunPython(_run(INSTALL), _run(REMOVE), elidable=False),
    ]
