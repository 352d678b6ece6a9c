//! Unwinding user stacks without frame pointers (issue 13): compact tables
//! built from each executable file's CFI, for the kernel unwinder.
//!
//! So far: [`table`], the table builder, checked against `readelf
//! --debug-dump=frames-interp`, and [`store`]: tables per file under a memory
//! budget and the page index the kernel side will search. The kernel side and
//! the table maps come next.

pub mod sampler;
pub mod store;
pub mod table;
