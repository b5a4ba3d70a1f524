//! The TensorBoard sink writes standard event files: read them back with a
//! minimal reader of TFRecord framing and the `Event`/`Summary` protobufs
//! (field numbers from tensorflow/core/util/event.proto and summary.proto).

use align::log::tensorboard::TensorboardSink;
use align::log::{LogEntry, MetricsSink};

/// (tag, step, value) of every scalar in the event files of `dir`.
fn read_scalars(dir: &std::path::Path) -> Vec<(String, i64, f32)> {
    let mut scalars = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        while at + 12 <= bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let record = &bytes[at + 12..at + 12 + len];
            at += 12 + len + 4; // length, length crc, data, data crc
            let mut step = 0;
            let mut values = Vec::new();
            for (field, value) in fields(record) {
                match (field, value) {
                    (2, Field::Varint(v)) => step = v as i64,
                    (5, Field::Bytes(summary)) => {
                        for (f, v) in fields(summary) {
                            if let (1, Field::Bytes(value)) = (f, v) {
                                let mut tag = String::new();
                                let mut number = f32::NAN;
                                for (g, w) in fields(value) {
                                    match (g, w) {
                                        (1, Field::Bytes(t)) => {
                                            tag = String::from_utf8(t.to_vec()).unwrap()
                                        }
                                        (2, Field::Fixed32(bits)) => number = f32::from_bits(bits),
                                        _ => {}
                                    }
                                }
                                values.push((tag, number));
                            }
                        }
                    }
                    _ => {}
                }
            }
            scalars.extend(values.into_iter().map(|(tag, v)| (tag, step, v)));
        }
    }
    scalars
}

enum Field<'a> {
    Varint(u64),
    Fixed64,
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

fn fields(bytes: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let field = match key & 7 {
            0 => Field::Varint(varint(bytes, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64
            }
            5 => {
                let v = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
                at += 4;
                Field::Fixed32(v)
            }
            2 => {
                let len = varint(bytes, &mut at) as usize;
                at += len;
                Field::Bytes(&bytes[at - len..at])
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((key >> 3, field));
    }
    out
}

fn entry(pairs: &[(&str, f64)]) -> LogEntry {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect()
}

#[test]
fn scalars_read_back_from_the_event_file() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut sink = TensorboardSink::create(&runs).unwrap();
    sink.record(&entry(&[
        ("loss", 0.75),
        ("rewards/accuracies", 0.5),
        ("step", 1.0),
    ]))
    .unwrap();
    sink.record(&entry(&[("loss", 0.5), ("step", 2.0)]))
        .unwrap();
    sink.record(&entry(&[("eval_loss", 0.25), ("step", 2.0)]))
        .unwrap();
    drop(sink);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut scalars = read_scalars(&runs);
    scalars.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(
        scalars,
        vec![
            ("train/loss".to_string(), 1, 0.75f32),
            ("train/rewards/accuracies".to_string(), 1, 0.5),
            ("eval/loss".to_string(), 2, 0.25),
            ("train/loss".to_string(), 2, 0.5),
        ]
    );
}
