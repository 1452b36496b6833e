//! The [`DeviceBus`] conformance suite, and [`round_trips`] for the benchmark.
//!
//! `a` and `b` are two handles on one backend — two instances of a deployment. Every
//! check uses fresh random instance ids, so runs can share a backend. Waits are bounded by
//! [`DEADLINE`]; "nothing else arrived" is checked by sending a marker and requiring it to
//! be the next message, never by sleeping.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::ports::device_bus::{BusError, DeviceBus, MAX_BUS_MESSAGE_BYTES};

/// How long any one message may take to arrive before a check fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

type Mailbox = BoxStream<'static, Bytes>;

/// Runs every check below.
pub async fn run_all(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    a_send_right_after_listen_arrives(a, b).await;
    one_senders_messages_arrive_in_order(a, b).await;
    a_mailbox_receives_only_its_own(a, b).await;
    large_and_empty_messages_arrive_intact(a, b).await;
    too_large_is_refused_and_nothing_is_sent(a, b).await;
    a_message_nobody_listens_for_is_dropped(a, b).await;
    sends_after_the_stream_is_dropped_are_ok(a, b).await;
    concurrent_senders_keep_their_own_order(a, b).await;
    fifty_mailboxes_on_one_handle(a, b).await;
}

/// The next message of `mailbox`, or a panic naming `what` after [`DEADLINE`].
pub async fn next(mailbox: &mut Mailbox, what: &str) -> Bytes {
    match tokio::time::timeout(DEADLINE, mailbox.next()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("{what}: the mailbox stream ended"),
        Err(_) => panic!("{what}: nothing arrived within {DEADLINE:?}"),
    }
}

async fn listen(bus: &dyn DeviceBus, instance: Uuid) -> Mailbox {
    bus.listen(instance)
        .await
        .unwrap_or_else(|e| panic!("{}: listen failed: {e}", bus.backend()))
}

async fn send(bus: &dyn DeviceBus, instance: Uuid, message: impl Into<Bytes>) {
    bus.send(instance, message.into())
        .await
        .unwrap_or_else(|e| panic!("{}: send failed: {e}", bus.backend()));
}

/// Sends a fresh marker to `instance` and requires it to be the next message: whatever
/// was sent to that mailbox before (and should not have arrived) would come first.
async fn only_the_marker_follows(
    sender: &dyn DeviceBus,
    instance: Uuid,
    mailbox: &mut Mailbox,
    what: &str,
) {
    let marker = Bytes::from(format!("marker-{}", Uuid::new_v4()));
    send(sender, instance, marker.clone()).await;
    let got = next(mailbox, what).await;
    assert_eq!(
        got,
        marker,
        "{what}: an unexpected message arrived before the marker: {:?}",
        preview(&got)
    );
}

fn preview(m: &Bytes) -> String {
    String::from_utf8_lossy(&m[..m.len().min(80)]).into_owned()
}

/// A message sent right after `listen` returns arrives, from the listening handle and
/// from the other one, whichever handle listens.
pub async fn a_send_right_after_listen_arrives(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    for (l, (listener, sender)) in [(a, a), (a, b), (b, a), (b, b)].into_iter().enumerate() {
        let id = Uuid::new_v4();
        let mut mailbox = listen(listener, id).await;
        let message = Bytes::from(format!("right after listen {l}"));
        send(sender, id, message.clone()).await;
        assert_eq!(
            next(&mut mailbox, &format!("send right after listen (case {l})")).await,
            message,
            "the message arrives intact"
        );
    }
}

/// 1,000 messages from one sender arrive in the order they were sent.
pub async fn one_senders_messages_arrive_in_order(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    const N: usize = 1_000;
    let id = Uuid::new_v4();
    let mut mailbox = listen(a, id).await;
    let sending = async {
        for i in 0..N {
            send(b, id, format!("{i}")).await;
        }
    };
    let receiving = async {
        for i in 0..N {
            let got = next(&mut mailbox, &format!("message {i} of {N}")).await;
            assert_eq!(
                preview(&got),
                format!("{i}"),
                "messages of one sender in order"
            );
        }
    };
    futures::join!(sending, receiving);
}

/// Two mailboxes, messages to both interleaved from both handles: each receives exactly
/// its own.
pub async fn a_mailbox_receives_only_its_own(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    const N: usize = 20;
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let mut at_x = listen(a, x).await;
    let mut at_y = listen(b, y).await;
    for i in 0..N {
        let sender = if i % 2 == 0 { a } else { b };
        send(sender, x, format!("x{i}")).await;
        send(sender, y, format!("y{i}")).await;
    }
    for (name, mailbox) in [("x", &mut at_x), ("y", &mut at_y)] {
        let mut got = Vec::new();
        for i in 0..N {
            got.push(preview(
                &next(mailbox, &format!("{name}'s message {i}")).await,
            ));
        }
        // Only one sender's order is promised, so compare as sets.
        got.sort();
        let mut want: Vec<String> = (0..N).map(|i| format!("{name}{i}")).collect();
        want.sort();
        assert_eq!(
            got, want,
            "mailbox {name} receives exactly its own messages"
        );
    }
    only_the_marker_follows(a, x, &mut at_x, "x after its own messages").await;
    only_the_marker_follows(b, y, &mut at_y, "y after its own messages").await;
}

/// A 1 MiB message and an empty one arrive byte for byte.
pub async fn large_and_empty_messages_arrive_intact(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    let id = Uuid::new_v4();
    let mut mailbox = listen(a, id).await;
    let large: Bytes = (0..1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    send(b, id, large.clone()).await;
    send(b, id, Bytes::new()).await;
    let got = next(&mut mailbox, "the 1 MiB message").await;
    assert!(
        got == large,
        "the 1 MiB message arrives intact ({} bytes came)",
        got.len()
    );
    let got = next(&mut mailbox, "the empty message").await;
    assert!(
        got.is_empty(),
        "the empty message arrives empty ({} bytes came)",
        got.len()
    );
}

/// A message of exactly the limit is carried; one byte more is `TooLarge` and nothing
/// reaches the mailbox.
pub async fn too_large_is_refused_and_nothing_is_sent(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    let id = Uuid::new_v4();
    let mut mailbox = listen(a, id).await;
    let mut big = vec![7u8; MAX_BUS_MESSAGE_BYTES + 1];
    match b.send(id, Bytes::from(big.clone())).await {
        Err(BusError::TooLarge(n)) => assert_eq!(n, MAX_BUS_MESSAGE_BYTES + 1, "the size refused"),
        other => panic!("a message over the limit must be TooLarge: {other:?}"),
    }
    only_the_marker_follows(b, id, &mut mailbox, "after a refused message").await;
    big.pop();
    send(b, id, big).await;
    let got = next(&mut mailbox, "a message of exactly the limit").await;
    assert!(
        got.len() == MAX_BUS_MESSAGE_BYTES && got.iter().all(|&x| x == 7),
        "a message of exactly the limit arrives intact ({} bytes came)",
        got.len()
    );
}

/// A send to an instance nobody listens on is `Ok`, reaches no other mailbox, and is not
/// delivered to a listener that starts later (the contract drops it).
pub async fn a_message_nobody_listens_for_is_dropped(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    let (x, nobody) = (Uuid::new_v4(), Uuid::new_v4());
    let mut at_x = listen(a, x).await;
    for sender in [a, b] {
        sender
            .send(nobody, Bytes::from_static(b"to nobody"))
            .await
            .unwrap_or_else(|e| panic!("a send to nobody must be Ok: {e}"));
    }
    only_the_marker_follows(b, x, &mut at_x, "x after sends to another instance").await;
    let mut late = listen(b, nobody).await;
    only_the_marker_follows(
        a,
        nobody,
        &mut late,
        "a listener that started after the sends",
    )
    .await;
}

/// After the stream is dropped sends to it are still `Ok`, and a new listener (a new id)
/// on either handle works.
pub async fn sends_after_the_stream_is_dropped_are_ok(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    let id = Uuid::new_v4();
    let mut mailbox = listen(a, id).await;
    send(b, id, "before the drop").await;
    assert_eq!(
        preview(&next(&mut mailbox, "before the drop").await),
        "before the drop"
    );
    drop(mailbox);
    for (i, sender) in [a, b, a, b].into_iter().enumerate() {
        sender
            .send(id, Bytes::from(format!("after the drop {i}")))
            .await
            .unwrap_or_else(|e| panic!("a send after the stream was dropped must be Ok: {e}"));
    }
    for listener in [a, b] {
        let fresh = Uuid::new_v4();
        let mut mailbox = listen(listener, fresh).await;
        only_the_marker_follows(a, fresh, &mut mailbox, "a new listener after a drop").await;
    }
}

/// 4 senders × 100 messages, sent concurrently from both handles: all arrive, each
/// sender's in order.
pub async fn concurrent_senders_keep_their_own_order(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    const SENDERS: usize = 4;
    const EACH: usize = 100;
    let id = Uuid::new_v4();
    let mut mailbox = listen(a, id).await;
    let senders = (0..SENDERS).map(|s| async move {
        let bus = if s % 2 == 0 { a } else { b };
        for i in 0..EACH {
            send(bus, id, format!("{s}:{i}")).await;
        }
    });
    let receiving = async {
        let mut seen = [0usize; SENDERS];
        for n in 0..SENDERS * EACH {
            let got = preview(&next(&mut mailbox, &format!("concurrent message {n}")).await);
            let (s, i) = got
                .split_once(':')
                .and_then(|(s, i)| Some((s.parse::<usize>().ok()?, i.parse::<usize>().ok()?)))
                .unwrap_or_else(|| panic!("a message nobody sent: {got:?}"));
            assert!(s < SENDERS, "a message nobody sent: {got:?}");
            assert_eq!(i, seen[s], "sender {s}'s messages in order");
            seen[s] += 1;
        }
    };
    futures::join!(futures::future::join_all(senders), receiving);
    only_the_marker_follows(b, id, &mut mailbox, "after the concurrent messages").await;
}

/// 50 mailboxes on one handle, each sent two messages from the other: each receives its
/// own, in order, and nothing else.
pub async fn fifty_mailboxes_on_one_handle(a: &dyn DeviceBus, b: &dyn DeviceBus) {
    const N: usize = 50;
    let mut mailboxes = Vec::with_capacity(N);
    for _ in 0..N {
        let id = Uuid::new_v4();
        mailboxes.push((id, listen(a, id).await));
    }
    for round in 0..2 {
        for (j, (id, _)) in mailboxes.iter().enumerate() {
            send(b, *id, format!("{j}/{round}")).await;
        }
    }
    for (j, (id, mailbox)) in mailboxes.iter_mut().enumerate() {
        for round in 0..2 {
            let got = next(mailbox, &format!("mailbox {j} of {N}, message {round}")).await;
            assert_eq!(
                preview(&got),
                format!("{j}/{round}"),
                "mailbox {j} gets its own"
            );
        }
        only_the_marker_follows(b, *id, mailbox, &format!("mailbox {j} of {N}")).await;
    }
}

/// `n` round trips of a 200-byte message: `a` sends to `b`'s mailbox, `b` answers to
/// `a`'s, timed from the send to the answer's arrival. For the benchmark and the adapter
/// tests' figures.
pub async fn round_trips(a: &dyn DeviceBus, b: &dyn DeviceBus, n: usize) -> Vec<Duration> {
    let (ia, ib) = (Uuid::new_v4(), Uuid::new_v4());
    let mut at_a = listen(a, ia).await;
    let mut at_b = listen(b, ib).await;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let mut message = vec![0x5a; 200];
        message[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let message = Bytes::from(message);
        let start = Instant::now();
        send(a, ib, message.clone()).await;
        let request = next(&mut at_b, "round trip: the request").await;
        send(b, ia, request).await;
        let answer = next(&mut at_a, "round trip: the answer").await;
        times.push(start.elapsed());
        assert_eq!(answer, message, "round trip {i}: the answer is the request");
    }
    times
}

/// The `p`-th percentile (0–100, nearest rank) of `samples`; zero when there are none.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
