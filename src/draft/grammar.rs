//! The GBNF grammar the LLM writes under (llama.cpp's grammar format).
//!
//! It admits exactly the note JSON: the given sections in order, each either `drafted` with 1..n
//! statements or `insufficient_input` with none, every statement citing 1..4 ids drawn from the
//! transcript's own segment ids. A model that would cite a segment that does not exist cannot
//! express it. Compact JSON without whitespace keeps the model from looping on spaces.

/// Builds the grammar for a note with `sections`, citing only `segment_ids`.
pub fn soap_grammar(
    sections: &[&str],
    segment_ids: &[&str],
    max_statements: u32,
    max_chars: usize,
) -> String {
    let mut rules = Vec::new();
    let section_rules: Vec<String> = (0..sections.len()).map(|i| format!("sec{i}")).collect();
    rules.push(format!(
        "root ::= \"{{\\\"sections\\\":[\" {} \"]}}\"",
        section_rules.join(" \",\" ")
    ));
    for (rule, name) in section_rules.iter().zip(sections) {
        rules.push(format!(
            "{rule} ::= \"{{\\\"name\\\":\\\"{}\\\",\" body \"}}\"",
            escape_literal(name)
        ));
    }
    let more = max_statements.saturating_sub(1);
    rules.push(format!(
        "body ::= \"\\\"status\\\":\\\"drafted\\\",\\\"statements\\\":[\" stmt (\",\" stmt){{0,{more}}} \"]\" | \"\\\"status\\\":\\\"insufficient_input\\\",\\\"statements\\\":[]\""
    ));
    rules.push(format!(
        "stmt ::= \"{{\\\"text\\\":\\\"\" char{{3,{max_chars}}} \"\\\",\\\"evidence\\\":[\" segid (\",\" segid){{0,3}} \"]}}\""
    ));
    // Printable characters other than the quote and backslash: no escapes needed in the output.
    rules.push("char ::= [^\"\\\\\\x00-\\x1f]".into());
    let alternatives: Vec<String> = segment_ids
        .iter()
        .map(|id| format!("\"\\\"{}\\\"\"", escape_literal(id)))
        .collect();
    rules.push(format!("segid ::= {}", alternatives.join(" | ")));
    rules.join("\n") + "\n"
}

/// Escapes text for use inside a GBNF string literal that itself sits inside a JSON string.
fn escape_literal(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '&' | '/'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_lists_sections_in_order_and_only_known_ids() {
        let g = soap_grammar(&["Subjective", "Plan"], &["s1", "s2"], 3, 120);
        assert!(
            g.starts_with("root ::= \"{\\\"sections\\\":[\" sec0 \",\" sec1 \"]}\""),
            "{g}"
        );
        assert!(
            g.contains("sec1 ::= \"{\\\"name\\\":\\\"Plan\\\",\" body \"}\""),
            "{g}"
        );
        assert!(
            g.contains("segid ::= \"\\\"s1\\\"\" | \"\\\"s2\\\"\""),
            "{g}"
        );
        assert!(g.contains("stmt (\",\" stmt){0,2}"), "{g}");
        assert!(g.contains("char{3,120}"), "{g}");
    }

    #[test]
    fn section_names_cannot_break_out_of_the_literal() {
        let g = soap_grammar(&["Plan\" | evil"], &["s1"], 1, 10);
        assert!(g.contains("\\\"Plan  evil\\\""), "{g}");
    }
}
