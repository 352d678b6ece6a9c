//! Map access every collector needs: find a map by name, sum or zero a
//! per-CPU counter array, empty a per-CPU hash map. Errors name the map.

use aya::{
    Ebpf, Pod,
    maps::{Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};

/// A collector's map could not be found or read.
#[derive(Debug, thiserror::Error)]
#[error("map {map}: {source}")]
pub struct MapAccessError {
    /// The map's name in the eBPF object.
    pub map: &'static str,
    /// What went wrong.
    #[source]
    pub source: MapError,
}

impl MapAccessError {
    /// For `map_err`: wraps an aya error with the map's name.
    pub fn on(map: &'static str) -> impl Fn(MapError) -> Self {
        move |source| Self { map, source }
    }

    fn missing(map: &'static str) -> Self {
        Self {
            map,
            source: MapError::InvalidName { name: map.into() },
        }
    }
}

/// The map called `name`.
pub fn find<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Map, MapAccessError> {
    ebpf.map(name).ok_or_else(|| MapAccessError::missing(name))
}

/// The map called `name`, to write.
pub fn find_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, MapAccessError> {
    ebpf.map_mut(name)
        .ok_or_else(|| MapAccessError::missing(name))
}

/// Each of the first `len` slots of a per-CPU `u64` array, summed over CPUs.
pub fn sum_counters(ebpf: &Ebpf, name: &'static str, len: u32) -> Result<Vec<u64>, MapAccessError> {
    let err = MapAccessError::on(name);
    let array: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(find(ebpf, name)?).map_err(&err)?;
    (0..len)
        .map(|i| Ok(array.get(&i, 0).map_err(&err)?.iter().sum()))
        .collect()
}

/// Sets the first `len` slots of a per-CPU `u64` array to zero on every CPU.
pub fn zero_counters(ebpf: &mut Ebpf, name: &'static str, len: u32) -> Result<(), MapAccessError> {
    let err = MapAccessError::on(name);
    let mut array: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(find_mut(ebpf, name)?).map_err(&err)?;
    let cpus = nr_cpus().map_err(|(_, e)| err(MapError::IoError(e)))?;
    for i in 0..len {
        let zeros =
            PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| err(MapError::IoError(e)))?;
        array.set(i, zeros, 0).map_err(&err)?;
    }
    Ok(())
}

/// Removes every entry of a hash map.
pub fn clear_hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<(), MapAccessError> {
    let mut map: aya::maps::HashMap<&mut MapData, K, V> =
        aya::maps::HashMap::try_from(find_mut(ebpf, name)?).map_err(MapAccessError::on(name))?;
    let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
    for key in keys {
        // Already gone is fine: the aim is an empty map.
        let _ = map.remove(&key);
    }
    Ok(())
}

/// Removes every entry of a per-CPU hash map.
pub fn clear_per_cpu_hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<(), MapAccessError> {
    let mut map: PerCpuHashMap<&mut MapData, K, V> =
        PerCpuHashMap::try_from(find_mut(ebpf, name)?).map_err(MapAccessError::on(name))?;
    let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
    for key in keys {
        // Already gone is fine: the aim is an empty map.
        let _ = map.remove(&key);
    }
    Ok(())
}

/// The stacks of `ids`, leaf first: ids from `UNWIND_STACK_ID_BASE` up
/// from `UNWIND_STACKS` (walked with unwind tables) when `unwound`, the
/// others from the stack-trace map `name`. A stack evicted since its id was
/// read is left out (shown as lost).
pub fn read_stacks(
    ebpf: &Ebpf,
    name: &'static str,
    ids: impl IntoIterator<Item = u32>,
    unwound: bool,
) -> Result<std::collections::HashMap<u32, Vec<u64>>, MapAccessError> {
    use perf_ebpf_common::unwind::{UNWIND_STACK_ID_BASE, UnwindStack};
    let traces: aya::maps::StackTraceMap<&MapData> =
        aya::maps::StackTraceMap::try_from(find(ebpf, name)?).map_err(MapAccessError::on(name))?;
    let walked: Option<aya::maps::HashMap<&MapData, u64, UnwindStack>> = if unwound {
        let map = find(ebpf, "UNWIND_STACKS")?;
        Some(aya::maps::HashMap::try_from(map).map_err(MapAccessError::on("UNWIND_STACKS"))?)
    } else {
        None
    };
    let mut out = std::collections::HashMap::new();
    for id in ids {
        if id >= UNWIND_STACK_ID_BASE as u32 {
            if let Some(Ok(stack)) = walked.as_ref().map(|m| m.get(&u64::from(id), 0)) {
                let len = (stack.len as usize).min(stack.pcs.len());
                out.insert(id, stack.pcs[..len].to_vec());
            }
        } else if let Ok(trace) = traces.get(&id, 0) {
            out.insert(id, trace.frames().iter().map(|f| f.ip).collect());
        }
    }
    Ok(out)
}
