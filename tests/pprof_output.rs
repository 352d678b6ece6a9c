//! `--format pprof` writes a gzipped profile.proto that pprof tools read.

mod common;

use std::io::Read;

use common::*;
use perf_user::output::pprof::proto;
use prost::Message;

#[test]
fn pprof_profile_names_the_hot_function() {
    if !require_privileges("pprof_profile_names_the_hot_function") {
        return;
    }
    let dir = test_dir("pprof_profile_names_the_hot_function");
    let exe = compile_c("hot", &dir);
    let mut workload = Workload::spawn(&exe, &["20"]);
    settle();
    workload.assert_running();
    let out = dir.join("profile.pb.gz");
    let pid = workload.pid().to_string();
    let (bytes, run) = profile_to_file(
        &["--pid", &pid, "--duration", "3s", "--format", "pprof"],
        &out,
    );
    drop(workload);

    assert_eq!(
        bytes.get(..2),
        Some(&[0x1f, 0x8b][..]),
        "pprof output should be gzipped\n{}",
        run.describe()
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("cannot gunzip the pprof output: {e}\n{}", run.describe()));
    let profile = proto::Profile::decode(&raw[..])
        .unwrap_or_else(|e| panic!("not a profile.proto message: {e}\n{}", run.describe()));

    let strings = &profile.string_table;
    assert_eq!(
        strings.first().map(String::as_str),
        Some(""),
        "string_table[0] must be the empty string"
    );
    let string = |i: i64| -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| strings.get(i))
            .unwrap_or_else(|| panic!("string index {i} out of the string table"))
    };
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| string(t.r#type))
        .collect();
    assert_eq!(types, ["samples", "cpu"], "sample_type names");

    assert!(
        !profile.sample.is_empty(),
        "the pprof profile has no samples"
    );
    for s in &profile.sample {
        assert_eq!(
            s.value.len(),
            2,
            "each sample needs a value per sample_type"
        );
    }
    let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    assert!(
        total >= 75,
        "only {total} samples in 3 s at 99 Hz of a CPU-bound process"
    );

    // A sample's leaf is location_id[0]; its innermost function is line[0].
    let leaf_function = |sample: &proto::Sample| -> &str {
        let leaf_id = *sample
            .location_id
            .first()
            .expect("a sample without locations");
        let location = profile
            .location
            .iter()
            .find(|l| l.id == leaf_id)
            .unwrap_or_else(|| panic!("sample refers to missing location {leaf_id}"));
        let Some(line) = location.line.first() else {
            return "";
        };
        let function = profile
            .function
            .iter()
            .find(|f| f.id == line.function_id)
            .unwrap_or_else(|| panic!("location refers to missing function {}", line.function_id));
        string(function.name)
    };
    let heaviest = profile.sample.iter().max_by_key(|s| s.value[0]).unwrap();
    assert_eq!(
        leaf_function(heaviest),
        "burn_cpu_hot",
        "the heaviest sample's leaf function ({} of {total} samples)",
        heaviest.value[0]
    );
    let hot: i64 = profile
        .sample
        .iter()
        .filter(|s| leaf_function(s) == "burn_cpu_hot")
        .map(|s| s.value[0])
        .sum();
    assert!(
        hot * 10 >= total * 8,
        "burn_cpu_hot is the leaf of only {hot} of {total} samples"
    );
    assert!(
        heaviest.value[1] > 0,
        "the cpu value of the heaviest sample should be positive"
    );
}
