//! Shared by the benchmarks: each owns one section of docs/BENCHMARKS.md between its markers and
//! replaces only that section, so the others' numbers stay.

/// Prints `section` (which starts with `start` and ends with `end`) and, with `out`, puts it in
/// place of the file's section between the same markers (appended if there is none).
pub fn publish(section: &str, start: &str, end: &str, out: Option<&str>) {
    println!("{section}");
    let Some(out) = out else {
        return;
    };
    let existing = std::fs::read_to_string(out).unwrap_or_default();
    let updated = match (existing.find(start), existing.find(end)) {
        (Some(s), Some(e)) if e > s => {
            format!("{}{section}{}", &existing[..s], &existing[e + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", existing.trim_end()),
    };
    std::fs::write(out, updated).expect("write the report");
    eprintln!("wrote {out}");
}
