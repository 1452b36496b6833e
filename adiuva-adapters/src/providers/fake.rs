//! Local servers speaking Google's and Microsoft's wire formats (token endpoints, Gmail,
//! Graph), for tests and the benchmark. CONTRACT h-prov: `FakeGoogle::start()`,
//! `FakeMicrosoft::start()`, each with `config()` (a provider config pointing at it),
//! a mailbox to fill, and controls: expire the access token, revoke the refresh token
//! (`invalid_grant`), answer 429 with `Retry-After` N times, count requests, a delay per
//! request.
