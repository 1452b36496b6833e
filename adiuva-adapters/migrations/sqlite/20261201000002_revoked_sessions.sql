-- Instances ask which sessions were revoked lately, to close the device sockets they
-- opened (RefreshTokenRepo::families_revoked_since); only revoked rows are indexed.
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
