//! Unwinding user stacks without frame pointers (issue 13): compact tables
//! built from each executable file's CFI, for the kernel unwinder.
//!
//! So far: [`table`], the table builder, checked against `readelf
//! --debug-dump=frames-interp`. The kernel side and the table maps come next.

pub mod table;
