//! Gzipped `profile.proto` (pprof) output, readable by `go tool pprof`,
//! Pyroscope and other tools that take Google's profile format.
//!
//! The message types in [`proto`] are written by hand with `prost` derives, so
//! no `protoc` or build script is needed.

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message as _;

use crate::profile::{Frame, Profile, ProfileKind, StackSample};

/// The messages of Google's `profile.proto` (package `perftools.profiles`),
/// with the field numbers and types of the official definition.
///
/// Every `int64` that the format calls an "index into string table" is an
/// index into [`Profile::string_table`], whose first entry is always `""`.
pub mod proto {
    /// A whole profile: the top-level message of a pprof file.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        /// What each entry of [`Sample::value`] measures, in the same order.
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        /// The recorded samples.
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        /// Binaries and libraries that locations belong to.
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        /// Program locations referenced by samples.
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        /// Functions referenced by the lines of locations.
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Strings referenced by index from everywhere else; entry 0 is `""`.
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        /// Regexp (string index) of frames to drop along with their callees.
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        /// Regexp (string index) of frames to keep even if `drop_frames` matches.
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        /// When collection started, in nanoseconds since the Unix epoch.
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        /// How long collection ran, in nanoseconds.
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        /// The kind of events between sampled occurrences.
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        /// The number of events (of `period_type`) between sampled occurrences.
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Free-form comments (string indexes).
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        /// Type (string index) of the preferred sample value; when unset,
        /// readers use the last one.
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    /// The meaning and unit of a value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        /// Type of the value, e.g. `"cpu"` (string index).
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        /// Unit of the value, e.g. `"nanoseconds"` (string index).
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// Values recorded for one stack (and one set of labels).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Ids of [`Location`]s, the leaf first and the root last.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One value per [`Profile::sample_type`], in the same order.
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        /// Extra context, such as the thread.
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    /// A key with a string or a numeric value, attached to a sample.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// The label's name (string index).
        #[prost(int64, tag = "1")]
        pub key: i64,
        /// A string value (string index); zero when the value is numeric.
        #[prost(int64, tag = "2")]
        pub str: i64,
        /// A numeric value; zero when the value is a string.
        #[prost(int64, tag = "3")]
        pub num: i64,
        /// Unit of `num` (string index), or zero when unspecified.
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    /// A binary or library mapped into memory.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        /// Unique nonzero id, referenced by [`Location::mapping_id`].
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Address at which the object is loaded.
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        /// End of the address range that the object occupies.
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        /// File offset that corresponds to `memory_start`.
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        /// The object's file name or a pseudo name such as `[vdso]`
        /// (string index).
        #[prost(int64, tag = "5")]
        pub filename: i64,
        /// Build id of the object (string index).
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        /// True when locations in this mapping have function names.
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        /// True when locations in this mapping have source file names.
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        /// True when locations in this mapping have line numbers.
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        /// True when locations in this mapping have inlined frames.
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    /// One program location (an instruction address).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        /// Unique nonzero id, referenced by [`Sample::location_id`].
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Id of the [`Mapping`] that holds this location, or zero if unknown.
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        /// The instruction address.
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// Functions at this address: inlined callees first, their caller last.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        /// True when several symbols share this address (identical code folding).
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    /// A function and source line of a location.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        /// Id of the [`Function`].
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        /// Source line number, or zero when unknown.
        #[prost(int64, tag = "2")]
        pub line: i64,
        /// Source column number, or zero when unknown.
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    /// A function.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        /// Unique nonzero id, referenced by [`Line::function_id`].
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Human-readable name (string index).
        #[prost(int64, tag = "2")]
        pub name: i64,
        /// Name as the system knows it, e.g. mangled (string index).
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        /// Source file of the function (string index).
        #[prost(int64, tag = "4")]
        pub filename: i64,
        /// Line where the function starts, or zero when unknown.
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Writes `profile` as a gzipped `profile.proto`.
///
/// Each sample has two values: the number of samples (`samples`/`count`) and
/// the CPU time they stand for (`cpu`/`nanoseconds`). Samples are labelled
/// with `pid`, `tid`, `process` and `thread`.
pub fn write(profile: &Profile, w: &mut dyn Write) -> io::Result<()> {
    let layout = match profile.kind {
        ProfileKind::Cpu => Layout::cpu(),
        ProfileKind::OffCpu => Layout::off_cpu(),
        ProfileKind::Wall => Layout {
            sample_types: &[("wall", "nanoseconds")],
            values: Some(&micros_as_nanos),
            labels: None,
            period: Some((("wall", "nanoseconds"), 1)),
        },
    };
    write_with(profile, &layout, w)
}

/// A time profile's value: microseconds in the model, nanoseconds in the
/// format.
fn micros_as_nanos(_: usize, s: &StackSample) -> Vec<i64> {
    vec![to_i64(s.count.saturating_mul(1_000))]
}

/// The values of a profile's stack `i`, one per sample type.
pub type Values<'a> = &'a dyn Fn(usize, &StackSample) -> Vec<i64>;

/// Extra labels of a sample: (key, string value).
pub type ExtraLabels<'a> = &'a dyn Fn(&StackSample) -> Vec<(&'static str, String)>;

/// What a profile's samples measure and carry beyond the CPU profile's
/// defaults: the daemon's endpoints label samples with their container and
/// serve allocation profiles through the same writer.
pub struct Layout<'a> {
    /// (type, unit) of each value; the last is the default sample type.
    pub sample_types: &'a [(&'a str, &'a str)],
    /// The values of stack `i`, one per sample type; `None`: the CPU
    /// profile's (samples, CPU nanoseconds).
    pub values: Option<Values<'a>>,
    /// Labels added to `pid`, `tid`, `process` and `thread`.
    pub labels: Option<ExtraLabels<'a>>,
    /// The period's (type, unit) and value; `None`: CPU time at the
    /// profile's frequency.
    pub period: Option<((&'a str, &'a str), i64)>,
}

impl Layout<'static> {
    /// The CPU profile: samples (count) and CPU time (nanoseconds).
    pub fn cpu() -> Self {
        Layout {
            sample_types: &[("samples", "count"), ("cpu", "nanoseconds")],
            values: None,
            labels: None,
            period: None,
        }
    }

    /// The off-CPU profile: time off the CPU (nanoseconds).
    pub fn off_cpu() -> Self {
        Layout {
            sample_types: &[("off_cpu", "nanoseconds")],
            values: Some(&micros_as_nanos),
            labels: None,
            period: Some((("off_cpu", "nanoseconds"), 1)),
        }
    }
}

/// Writes `profile` as a gzipped `profile.proto` laid out as `layout` says.
pub fn write_with(profile: &Profile, layout: &Layout<'_>, w: &mut dyn Write) -> io::Result<()> {
    let bytes = build(profile, layout).encode_to_vec();
    let mut gz = GzEncoder::new(w, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()
}

/// Converts a count to the format's `int64`, saturating.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The string table under construction: entry 0 is `""`.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings {
            table: Vec::new(),
            index: HashMap::new(),
        };
        s.intern("");
        s
    }

    /// Index of `s`, added to the table on first use.
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = to_i64(self.table.len() as u64);
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Identity of a location: (module, offset, kernel).
type LocationKey<'a> = (&'a str, u64, bool);
/// Identity of a function: (name, module, source file).
type FunctionKey<'a> = (String, &'a str, Option<&'a str>);

/// Builds the (not yet encoded) pprof message for `profile`.
fn build(profile: &Profile, layout: &Layout<'_>) -> proto::Profile {
    let mut strings = Strings::new();
    let cpu_period = to_i64(profile.period_nanos());

    let sample_type: Vec<proto::ValueType> = layout
        .sample_types
        .iter()
        .map(|(t, u)| proto::ValueType {
            r#type: strings.intern(t),
            unit: strings.intern(u),
        })
        .collect();
    let ((period_kind, period_unit), period) = layout
        .period
        .unwrap_or((("cpu", "nanoseconds"), cpu_period));
    let period_type = proto::ValueType {
        r#type: strings.intern(period_kind),
        unit: strings.intern(period_unit),
    };
    let default_sample_type = sample_type.last().map_or(0, |t| t.r#type);
    let pid_key = strings.intern("pid");
    let tid_key = strings.intern("tid");
    let process_key = strings.intern("process");
    let thread_key = strings.intern("thread");

    let mut mappings: Vec<proto::Mapping> = Vec::new();
    let mut mapping_ids: HashMap<&str, u64> = HashMap::new();
    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<FunctionKey<'_>, u64> = HashMap::new();
    let mut locations: Vec<proto::Location> = Vec::new();
    let mut location_ids: HashMap<LocationKey<'_>, u64> = HashMap::new();

    let mut samples = Vec::with_capacity(profile.stacks.len());
    for (index, stack) in profile.stacks.iter().enumerate() {
        let mut location_id = Vec::with_capacity(stack.frames.len());
        // The model is root first; pprof wants the leaf first.
        for frame in stack.frames.iter().rev() {
            let frame: &Frame = frame;
            let module = frame.module.as_str();

            let mapping_id = match mapping_ids.get(module) {
                Some(&id) => id,
                None => {
                    let id = mappings.len() as u64 + 1;
                    mappings.push(proto::Mapping {
                        id,
                        filename: strings.intern(module),
                        ..Default::default()
                    });
                    mapping_ids.insert(module, id);
                    id
                }
            };
            let mapping = &mut mappings[(mapping_id - 1) as usize];
            mapping.has_functions |= frame.function.is_some();
            mapping.has_filenames |= frame.file.is_some();
            mapping.has_line_numbers |= frame.line.is_some();

            let key = (module, frame.offset, frame.kernel);
            let id = match location_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let name = frame.name();
                    let file = frame.file.as_deref();
                    let fkey = (name, module, file);
                    let function_id = match function_ids.get(&fkey) {
                        Some(&id) => id,
                        None => {
                            let id = functions.len() as u64 + 1;
                            let name = strings.intern(&fkey.0);
                            functions.push(proto::Function {
                                id,
                                name,
                                system_name: name,
                                filename: strings.intern(file.unwrap_or("")),
                                start_line: 0,
                            });
                            function_ids.insert(fkey, id);
                            id
                        }
                    };
                    let id = locations.len() as u64 + 1;
                    locations.push(proto::Location {
                        id,
                        mapping_id,
                        address: frame.address,
                        line: vec![proto::Line {
                            function_id,
                            line: frame.line.map_or(0, i64::from),
                            column: 0,
                        }],
                        is_folded: false,
                    });
                    location_ids.insert(key, id);
                    id
                }
            };
            location_id.push(id);
        }

        let num = |key, num| proto::Label {
            key,
            num,
            ..Default::default()
        };
        let mut label = vec![
            num(pid_key, i64::from(stack.pid)),
            num(tid_key, i64::from(stack.tid)),
            proto::Label {
                key: process_key,
                str: strings.intern(&stack.process),
                ..Default::default()
            },
            proto::Label {
                key: thread_key,
                str: strings.intern(&stack.thread),
                ..Default::default()
            },
        ];
        if let Some(state) = stack.state {
            label.push(proto::Label {
                key: strings.intern("state"),
                str: strings.intern(state.name()),
                ..Default::default()
            });
        }
        if let Some(extra) = layout.labels {
            for (key, value) in extra(stack) {
                label.push(proto::Label {
                    key: strings.intern(key),
                    str: strings.intern(&value),
                    ..Default::default()
                });
            }
        }
        let value = match layout.values {
            Some(values) => values(index, stack),
            None => {
                let count = to_i64(stack.count);
                vec![count, count.saturating_mul(period)]
            }
        };
        samples.push(proto::Sample {
            location_id,
            value,
            label,
        });
    }

    let mut comment = Vec::new();
    if !profile.lost.is_empty() {
        let l = &profile.lost;
        let text = format!(
            "lost: {} samples (sample map full), user stacks {} (collisions) + {} (errors), \
             kernel stacks {} (collisions) + {} (errors)",
            l.sample_map_full,
            l.user_stack_collisions,
            l.user_stack_errors,
            l.kernel_stack_collisions,
            l.kernel_stack_errors
        );
        comment.push(strings.intern(&text));
    }

    let duration_nanos = (profile.duration_secs.max(0.0) * 1e9) as i64;
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        string_table: strings.table,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: to_i64(profile.start_unix_nanos),
        duration_nanos,
        period_type: Some(period_type),
        period,
        comment,
        default_sample_type,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::io::Read;
    use std::sync::Arc;

    use flate2::read::GzDecoder;
    use prost::Message as _;
    use prost::bytes::Buf;
    use prost::encoding::{WireType, decode_key, decode_varint};

    use super::{proto, write};
    use crate::profile::{Frame, LostCounts, Profile, StackSample};

    fn frame(function: Option<&str>, module: &str, offset: u64, kernel: bool) -> Arc<Frame> {
        Arc::new(Frame {
            function: function.map(str::to_owned),
            module: module.to_owned(),
            offset,
            // Kernel offsets are the addresses themselves.
            address: if kernel {
                offset
            } else {
                0x5500_0000_0000 + offset
            },
            function_start: None,
            file: None,
            line: None,
            kernel,
        })
    }

    fn sample_profile() -> Profile {
        let mut main = (*frame(Some("main"), "/usr/bin/app", 0x1000, false)).clone();
        main.file = Some("src/main.c".to_owned());
        main.line = Some(42);
        let main = Arc::new(main);
        let compute = frame(Some("compute"), "/usr/bin/app", 0x2000, false);
        let unnamed = frame(None, "libc.so.6", 0x3abc, false);
        let syscall = frame(
            Some("do_syscall_64"),
            "[kernel]",
            0xffff_ffff_8100_0000,
            true,
        );
        Profile {
            kind: crate::profile::ProfileKind::Cpu,
            frequency_hz: 100,
            duration_secs: 2.5,
            start_unix_nanos: 1_700_000_000_123_456_789,
            cpus: 4,
            total_samples: 5,
            lost: LostCounts {
                sample_map_full: 7,
                ..Default::default()
            },
            unwind: None,
            off_cpu: None,
            stacks: vec![
                StackSample {
                    state: None,
                    pid: 100,
                    tid: 101,
                    process: "app".to_owned(),
                    thread: "worker".to_owned(),
                    frames: vec![main.clone(), compute.clone(), unnamed, syscall],
                    count: 3,
                },
                StackSample {
                    state: None,
                    pid: 100,
                    tid: 100,
                    process: "app".to_owned(),
                    thread: "app".to_owned(),
                    frames: vec![main, compute],
                    count: 2,
                },
            ],
        }
    }

    /// Writes `profile` and returns the gunzipped protobuf bytes.
    fn encode(profile: &Profile) -> Vec<u8> {
        let mut gz = Vec::new();
        write(profile, &mut gz).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
        let mut raw = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
        raw
    }

    fn str_at(p: &proto::Profile, i: i64) -> &str {
        &p.string_table[usize::try_from(i).unwrap()]
    }

    fn label<'a>(p: &'a proto::Profile, s: &'a proto::Sample, key: &str) -> &'a proto::Label {
        let found: Vec<_> = s.label.iter().filter(|l| str_at(p, l.key) == key).collect();
        assert_eq!(found.len(), 1, "label {key}");
        found[0]
    }

    #[test]
    fn one_function_per_start_of_an_unnamed_function() {
        // Three samples at three addresses of one stripped function, and one
        // in the function after it.
        let at = |offset, start| {
            let mut f = (*frame(None, "libz.so.1", offset, false)).clone();
            f.function_start = Some(start);
            Arc::new(f)
        };
        let mut profile = sample_profile();
        let template = profile.stacks[1].clone();
        profile.stacks = [
            (0x4a08, 0x4a00),
            (0x4a0e, 0x4a00),
            (0x4a13, 0x4a00),
            (0x4b10, 0x4b00),
        ]
        .into_iter()
        .map(|(o, s)| StackSample {
            state: None,
            frames: vec![template.frames[0].clone(), at(o, s)],
            count: 1,
            ..template.clone()
        })
        .collect();
        profile.total_samples = 4;
        let p = proto::Profile::decode(&encode(&profile)[..]).unwrap();
        let names: Vec<&str> = p.function.iter().map(|f| str_at(&p, f.name)).collect();
        assert_eq!(
            names.iter().filter(|n| **n == "libz.so.1+0x4a00").count(),
            1,
            "{names:?}"
        );
        assert!(names.contains(&"libz.so.1+0x4b00"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("0x4a08")), "{names:?}");
        // Each address keeps its own location, all pointing to that one function.
        let f4a00 = p
            .function
            .iter()
            .find(|f| str_at(&p, f.name) == "libz.so.1+0x4a00")
            .unwrap()
            .id;
        let locs = p
            .location
            .iter()
            .filter(|l| l.line[0].function_id == f4a00)
            .count();
        assert_eq!(locs, 3);
    }

    #[test]
    fn decodes_to_the_profile() {
        let profile = sample_profile();
        let p = proto::Profile::decode(&encode(&profile)[..]).unwrap();

        assert_eq!(p.string_table[0], "");
        let unique: HashSet<_> = p.string_table.iter().collect();
        assert_eq!(unique.len(), p.string_table.len(), "strings interned");

        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (str_at(&p, t.r#type), str_at(&p, t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = p.period_type.as_ref().unwrap();
        assert_eq!(str_at(&p, period_type.r#type), "cpu");
        assert_eq!(str_at(&p, period_type.unit), "nanoseconds");
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.time_nanos, 1_700_000_000_123_456_789);
        assert_eq!(p.duration_nanos, 2_500_000_000);
        assert_eq!(p.comment.len(), 1);
        assert!(str_at(&p, p.comment[0]).contains("7 samples"));

        // Ids: nonzero, unique, and everything referenced exists.
        let mappings: HashMap<u64, &proto::Mapping> = p.mapping.iter().map(|m| (m.id, m)).collect();
        let functions: HashMap<u64, &proto::Function> =
            p.function.iter().map(|f| (f.id, f)).collect();
        let locations: HashMap<u64, &proto::Location> =
            p.location.iter().map(|l| (l.id, l)).collect();
        assert_eq!(mappings.len(), p.mapping.len());
        assert_eq!(functions.len(), p.function.len());
        assert_eq!(locations.len(), p.location.len());
        assert!(!mappings.contains_key(&0));
        assert!(!functions.contains_key(&0));
        assert!(!locations.contains_key(&0));
        // Shared frames are not duplicated.
        assert_eq!(p.mapping.len(), 3);
        assert_eq!(p.function.len(), 4);
        assert_eq!(p.location.len(), 4);
        for l in &p.location {
            assert!(mappings.contains_key(&l.mapping_id));
            assert_eq!(l.line.len(), 1);
            assert!(functions.contains_key(&l.line[0].function_id));
        }
        for f in &p.function {
            assert_eq!(f.name, f.system_name);
        }

        let names = |s: &proto::Sample| -> Vec<String> {
            s.location_id
                .iter()
                .map(|id| {
                    let loc = locations[id];
                    str_at(&p, functions[&loc.line[0].function_id].name).to_owned()
                })
                .collect()
        };
        assert_eq!(p.sample.len(), 2);
        let (s0, s1) = (&p.sample[0], &p.sample[1]);
        assert_eq!(
            names(s0),
            ["do_syscall_64", "libc.so.6+0x3abc", "compute", "main"]
        );
        assert_eq!(names(s1), ["compute", "main"]);
        assert_eq!(s0.value, [3, 30_000_000]);
        assert_eq!(s1.value, [2, 20_000_000]);
        // The shared frames resolve to the same locations.
        assert_eq!(s0.location_id[2..], s1.location_id[..]);

        assert_eq!(label(&p, s0, "pid").num, 100);
        assert_eq!(label(&p, s0, "tid").num, 101);
        assert_eq!(str_at(&p, label(&p, s0, "process").str), "app");
        assert_eq!(str_at(&p, label(&p, s0, "thread").str), "worker");
        assert_eq!(label(&p, s1, "tid").num, 100);
        assert_eq!(str_at(&p, label(&p, s1, "thread").str), "app");

        // Location and mapping details.
        let leaf = locations[&s0.location_id[0]];
        assert_eq!(leaf.address, 0xffff_ffff_8100_0000);
        assert_eq!(str_at(&p, mappings[&leaf.mapping_id].filename), "[kernel]");
        let root = locations[&s0.location_id[3]];
        assert_eq!(root.line[0].line, 42);
        let main_fn = functions[&root.line[0].function_id];
        assert_eq!(str_at(&p, main_fn.filename), "src/main.c");
        let app = mappings[&root.mapping_id];
        assert_eq!(str_at(&p, app.filename), "/usr/bin/app");
        assert!(app.has_functions && app.has_filenames && app.has_line_numbers);
        let libc = mappings[&locations[&s0.location_id[1]].mapping_id];
        assert_eq!(str_at(&p, libc.filename), "libc.so.6");
        assert!(!libc.has_functions);
        let unnamed_fn = functions[&locations[&s0.location_id[1]].line[0].function_id];
        assert_eq!(str_at(&p, unnamed_fn.filename), "");
    }

    /// Reads the top-level fields of a protobuf message: (field number,
    /// varint value or length-delimited bytes).
    fn fields(mut buf: &[u8]) -> Vec<(u32, Result<u64, Vec<u8>>)> {
        let mut out = Vec::new();
        while buf.has_remaining() {
            let (tag, wire) = decode_key(&mut buf).unwrap();
            let value = match wire {
                WireType::Varint => Ok(decode_varint(&mut buf).unwrap()),
                WireType::LengthDelimited => {
                    let len = usize::try_from(decode_varint(&mut buf).unwrap()).unwrap();
                    let bytes = buf[..len].to_vec();
                    buf.advance(len);
                    Err(bytes)
                }
                other => panic!("unexpected wire type {other:?}"),
            };
            out.push((tag, value));
        }
        out
    }

    fn packed(bytes: &[u8]) -> Vec<u64> {
        let mut buf = bytes;
        let mut out = Vec::new();
        while buf.has_remaining() {
            out.push(decode_varint(&mut buf).unwrap());
        }
        out
    }

    /// Checks the field numbers on the wire against profile.proto without
    /// going through the `proto` structs, so a wrong tag there fails here.
    #[test]
    fn wire_tags_match_profile_proto() {
        let raw = encode(&sample_profile());
        let top = fields(&raw);
        let all = |n: u32| top.iter().filter(move |(t, _)| *t == n).map(|(_, v)| v);
        let bytes = |n: u32| all(n).map(|v| v.clone().unwrap_err()).collect::<Vec<_>>();
        let varint = |n: u32| all(n).next().unwrap().clone().unwrap();

        // string_table = 6
        let strings: Vec<String> = bytes(6)
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        assert_eq!(strings[0], "");
        let idx = |s: &str| strings.iter().position(|x| x == s).unwrap() as u64;
        // sample_type = 1 (ValueType: type = 1, unit = 2)
        let st = bytes(1);
        assert_eq!(st.len(), 2);
        assert_eq!(
            fields(&st[1]),
            [(1, Ok(idx("cpu"))), (2, Ok(idx("nanoseconds")))]
        );
        // sample = 2, mapping = 3, location = 4, function = 5
        assert_eq!(bytes(2).len(), 2);
        assert_eq!(bytes(3).len(), 3);
        assert_eq!(bytes(4).len(), 4);
        assert_eq!(bytes(5).len(), 4);
        // time_nanos = 9, duration_nanos = 10, period = 12,
        // period_type = 11, comment = 13 (packed), default_sample_type = 14
        assert_eq!(varint(9), 1_700_000_000_123_456_789);
        assert_eq!(varint(10), 2_500_000_000);
        assert_eq!(varint(12), 10_000_000);
        assert_eq!(
            fields(&bytes(11)[0]),
            [(1, Ok(idx("cpu"))), (2, Ok(idx("nanoseconds")))]
        );
        assert_eq!(packed(&bytes(13)[0]).len(), 1);
        assert_eq!(varint(14), idx("cpu"));
        assert_eq!(all(7).count() + all(8).count(), 0);

        // Sample: location_id = 1 (packed), value = 2 (packed), label = 3.
        let sample = fields(&bytes(2)[1]);
        let locs = packed(sample[0].1.as_ref().unwrap_err());
        assert_eq!(sample[0].0, 1);
        assert_eq!(locs.len(), 2);
        assert_eq!(sample[1].0, 2);
        assert_eq!(packed(sample[1].1.as_ref().unwrap_err()), [2, 20_000_000]);
        let labels: Vec<_> = sample[2..].iter().collect();
        assert!(labels.iter().all(|(t, _)| *t == 3));
        // Label: key = 1, str = 2, num = 3.
        let pid = fields(labels[0].1.as_ref().unwrap_err());
        assert_eq!(pid, [(1, Ok(idx("pid"))), (3, Ok(100))]);
        let thread = fields(labels[3].1.as_ref().unwrap_err());
        assert_eq!(thread, [(1, Ok(idx("thread"))), (2, Ok(idx("app")))]);

        // Function "main": id = 1, name = 2, system_name = 3, filename = 4.
        let main_fn = bytes(5)
            .into_iter()
            .map(|b| fields(&b))
            .find(|f| f.contains(&(2, Ok(idx("main")))))
            .unwrap();
        assert_eq!(main_fn[0].0, 1);
        assert_eq!(main_fn[2], (3, Ok(idx("main"))));
        assert_eq!(main_fn[3], (4, Ok(idx("src/main.c"))));
        let main_fn_id = main_fn[0].1.clone().unwrap();

        // Location of "main": id = 1, mapping_id = 2, address = 3,
        // line = 4 (Line: function_id = 1, line = 2).
        let main_loc = bytes(4)
            .into_iter()
            .map(|b| fields(&b))
            .find(|f| {
                f.iter().any(|(t, v)| {
                    *t == 4 && fields(v.as_ref().unwrap_err())[0] == (1, Ok(main_fn_id))
                })
            })
            .unwrap();
        assert_eq!(main_loc[0].0, 1);
        assert_eq!(main_loc[0].1, Ok(locs[1]), "root is last");
        assert_eq!(main_loc[1].0, 2);
        assert_eq!(main_loc[2], (3, Ok(0x5500_0000_1000)));
        let line = fields(main_loc[3].1.as_ref().unwrap_err());
        assert_eq!(line, [(1, Ok(main_fn_id)), (2, Ok(42))]);
        let app_id = main_loc[1].1.clone().unwrap();

        // Mapping: id = 1, filename = 5, has_functions = 7,
        // has_filenames = 8, has_line_numbers = 9.
        let app = bytes(3)
            .into_iter()
            .map(|b| fields(&b))
            .find(|f| f[0] == (1, Ok(app_id)))
            .unwrap();
        assert_eq!(
            app[1..],
            [
                (5, Ok(idx("/usr/bin/app"))),
                (7, Ok(1)),
                (8, Ok(1)),
                (9, Ok(1))
            ]
        );
    }

    #[test]
    fn empty_profile_is_valid() {
        let profile = Profile {
            kind: crate::profile::ProfileKind::Cpu,
            frequency_hz: 0,
            duration_secs: f64::NAN,
            start_unix_nanos: 0,
            cpus: 1,
            total_samples: 0,
            lost: LostCounts::default(),
            unwind: None,
            off_cpu: None,
            stacks: Vec::new(),
        };
        let p = proto::Profile::decode(&encode(&profile)[..]).unwrap();
        assert_eq!(p.string_table[0], "");
        assert!(p.sample.is_empty() && p.location.is_empty() && p.comment.is_empty());
        assert_eq!(p.sample_type.len(), 2);
        assert_eq!(p.period, 1_000_000_000);
        assert_eq!(p.duration_nanos, 0);
    }
}
