-- The annotated frame (boxes and labels drawn, JPEG) written by the deep worker, served by
-- GET /events/<id>/snapshot and linked from alerts.
ALTER TABLE events ADD COLUMN snapshot bytea;
