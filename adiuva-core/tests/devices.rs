//! The device hub: two hubs ("two instances") on one `MemoryDb` and one
//! `MemoryDeviceBus`, devices played by test links that record every frame.

mod devices {
    pub mod support;

    mod calls;
    mod chat;
    mod presence;
    mod queue;
}
