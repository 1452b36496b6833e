//! The device bus conformance suite on the in-process adapter: two clones of one bus are
//! the two instances.

use adiuva_core::devices::memory_bus::MemoryDeviceBus;

#[tokio::test]
async fn conformance_in_memory() {
    let bus = MemoryDeviceBus::new();
    adiuva_core::testing::device_bus::run_all(&bus, &bus.clone()).await;
}
