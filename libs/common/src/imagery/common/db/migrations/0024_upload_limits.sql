-- imagery 0024: limits one upload asked for at CreateUploadUrl, stricter than its project's
-- (max_width, max_height, max_pixels, max_frames, allow_animation), read by the processor
-- with its claim. NULL: the project's limits only. Nullable without a default: metadata only,
-- no table rewrite.
ALTER TABLE image_records ADD COLUMN upload_limits jsonb;
