-- 0014 the pictures a deletion job handed to the blob collector (store/deletion.py).
--
-- A job is done only once the collector has dealt with each of them: dropped, or kept
-- because another home's event names the same bytes. So "done" means the pictures are gone
-- too, and deletion_jobs.blobs_deleted counts exactly the blobs that went. The rows go
-- when their job is done.
CREATE TABLE deletion_job_blobs (
    job_id bigint NOT NULL REFERENCES deletion_jobs (id) ON DELETE CASCADE,
    key    text   NOT NULL CHECK (key ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (job_id, key)
);
-- "Is this key still some job's?": the collector's queue is joined by key.
CREATE INDEX deletion_job_blobs_key_idx ON deletion_job_blobs (key);
