-- When the user read a notification in the app (POST /notifications/<id>/read).
-- NULL until read; the first read time is kept.

ALTER TABLE notifications
    ADD COLUMN read_at timestamptz;
