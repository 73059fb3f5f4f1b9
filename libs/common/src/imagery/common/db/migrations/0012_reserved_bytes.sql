-- imagery 0012: the bytes a project's quota counts for an upload that has not ended (its
-- declared size, else the project's maximum). Metadata only: a constant default adds the
-- column without rewriting the table, and the CHECK is validated by 0013 without blocking
-- reads (validating it here would scan the table under this statement's exclusive lock).
ALTER TABLE image_records ADD COLUMN reserved_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE image_records ADD CONSTRAINT image_records_reserved_bytes_check
    CHECK (reserved_bytes >= 0) NOT VALID;
