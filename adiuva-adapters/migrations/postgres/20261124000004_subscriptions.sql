-- Stripe subscriptions as mirrored from webhooks (idempotent by stripe_subscription_id).
CREATE TABLE subscriptions (
    id                      UUID PRIMARY KEY,
    user_id                 UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stripe_subscription_id  TEXT NOT NULL UNIQUE,
    tier                    TEXT NOT NULL CHECK (tier IN ('free', 'pro', 'power', 'team')),
    status                  TEXT NOT NULL,
    current_period_end      BIGINT NOT NULL,
    created_at              BIGINT NOT NULL
);
CREATE INDEX subscriptions_user ON subscriptions (user_id, created_at DESC);
