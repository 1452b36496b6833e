//! The agents platform's runs and scheduler: several `AgentService` instances on one
//! `MemoryDb`, one `MemoryDeviceBus` and one `ManualClock`, a provider played by an
//! in-test `ProviderApi`, the model by `ScriptedModel`, devices by recording links.

mod agents {
    pub mod support;

    mod hub;
    mod runs;
    mod scheduler;
}
