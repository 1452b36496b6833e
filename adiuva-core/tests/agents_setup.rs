//! The agents platform's setup side: the catalog, config CRUD with validation and tier
//! limits, OAuth (authorize → consent → callback, refresh) against an in-test provider
//! that checks PKCE like a real one, and the model-led setup journey over a
//! `ScriptedModel`. Everything runs on `MemoryDb` through the public facade.

mod agents_setup {
    pub mod support;

    mod configs;
    mod journey;
    mod oauth;
}
