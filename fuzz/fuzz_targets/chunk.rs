//! The chunker over every supported language (picked by the first byte) and any text: it must
//! not panic or overflow its stack, and every block must lie within the file, in order of lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 24] = [
    "f.py", "f.js", "f.ts", "f.tsx", "f.go", "f.rs", "f.java", "f.c", "f.cpp", "f.h", "f.cs",
    "f.rb", "f.php", "f.kt", "f.swift", "f.scala", "f.ex", "f.hs", "f.lua", "f.sh", "f.zig",
    "f.md", "f.txt", "Makefile",
];

fuzz_target!(|input: (u8, &str)| {
    let (which, source) = input;
    let path = NAMES[which as usize % NAMES.len()];
    let limits = hgd_chunk::Limits::default();
    let lines = source.split('\n').count() as u32;
    for block in hgd_chunk::chunk(path, source, &limits) {
        assert!(block.start_line >= 1, "{path}: {block:?}");
        assert!(block.start_line <= block.end_line, "{path}: {block:?}");
        assert!(block.end_line <= lines, "{path}: line {} of {lines}", block.end_line);
    }
});
