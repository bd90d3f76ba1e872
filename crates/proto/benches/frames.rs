//! Frame codec cost: decoding the commonest client frame (`send`) and
//! encoding the commonest server frame (a `message`), the two JSON
//! steps every delivered message pays on the server; and a client's
//! decoding of that `message`, whole or as a [`FrameView`].

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use missive_proto::{FrameView, MessageKind, ServerFrame, decode_client_frame};

fn message(text_bytes: usize) -> ServerFrame {
    ServerFrame::Message {
        message_id: "01a226e2-8d61-733f-837e-9a4a4f8d3829".into(),
        conversation: 42,
        seq: 9_001,
        from: "alice".into(),
        from_device: 7,
        client_msg_id: "c-18ec7dd664e4812f".into(),
        kind: MessageKind::Text,
        text: "x".repeat(text_bytes),
        media: Vec::new(),
        target: None,
        event: None,
        edited_ms: None,
        deleted: false,
        ts_ms: 1_795_948_711_265,
        expires_ms: None,
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frames");
    for text_bytes in [16usize, 1024] {
        let send = format!(
            r#"{{"type":"send","id":"c1","to":"bob","client_msg_id":"m-1","text":"{}"}}"#,
            "x".repeat(text_bytes)
        );
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("decode_send_{text_bytes}b"), |b| {
            b.iter(|| decode_client_frame(std::hint::black_box(&send)).expect("valid frame"));
        });
        let frame = message(text_bytes);
        group.bench_function(format!("encode_message_{text_bytes}b"), |b| {
            b.iter(|| std::hint::black_box(&frame).to_json());
        });
        // What a receiving client pays per delivery: the whole frame, or
        // only what it routes and acks by.
        let json = frame.to_json();
        group.bench_function(format!("decode_message_{text_bytes}b"), |b| {
            b.iter(|| {
                serde_json::from_str::<ServerFrame>(std::hint::black_box(&json)).expect("valid")
            });
        });
        group.bench_function(format!("view_message_{text_bytes}b"), |b| {
            b.iter(|| FrameView::parse(std::hint::black_box(&json)).expect("valid"));
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
