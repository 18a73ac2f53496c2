//! The GBNF grammar the LLM writes under (llama.cpp's grammar format).
//!
//! It admits exactly the note JSON: the given sections in order, each with 1..n statements, every
//! statement citing 1..4 ids drawn from the facts of *that* section. The ids come before the
//! text, so the model writes a sentence about facts it has already named. A model that would cite a
//! fact that does not exist, or move a fact to another section, cannot express it. Compact JSON
//! without whitespace keeps the model from looping on spaces.

/// One section the model may write: its name and the ids of the facts it holds.
pub struct GrammarSection<'a> {
    pub name: &'a str,
    pub fact_ids: Vec<&'a str>,
}

/// Builds the grammar for a note with `sections` (each must hold at least one fact id).
pub fn note_grammar(
    sections: &[GrammarSection<'_>],
    max_statements: u32,
    max_chars: usize,
) -> String {
    let mut rules = Vec::new();
    let section_rules: Vec<String> = (0..sections.len()).map(|i| format!("sec{i}")).collect();
    rules.push(format!(
        "root ::= \"{{\\\"sections\\\":[\" {} \"]}}\"",
        section_rules.join(" \",\" ")
    ));
    let more = max_statements.saturating_sub(1);
    for (index, (rule, section)) in section_rules.iter().zip(sections).enumerate() {
        rules.push(format!(
            "{rule} ::= \"{{\\\"name\\\":\\\"{}\\\",\\\"statements\\\":[\" st{index} (\",\" st{index}){{0,{more}}} \"]}}\"",
            escape_literal(section.name)
        ));
        rules.push(format!(
            "st{index} ::= \"{{\\\"facts\\\":[\" fid{index} (\",\" fid{index}){{0,3}} \"],\\\"text\\\":\\\"\" char{{3,{max_chars}}} \".\"? \"\\\"}}\""
        ));
        let alternatives: Vec<String> = section
            .fact_ids
            .iter()
            .map(|id| format!("\"\\\"{}\\\"\"", escape_literal(id)))
            .collect();
        rules.push(format!("fid{index} ::= {}", alternatives.join(" | ")));
    }
    // Printable characters other than the quote and backslash (no escapes needed in the output),
    // and a full stop only inside a number: each statement is one sentence, so a model cannot
    // run on into a paragraph.
    rules.push("char ::= [^\".\\\\\\x00-\\x1f] | \".\" [0-9]".into());
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
    fn grammar_lists_sections_in_order_and_only_their_own_fact_ids() {
        let g = note_grammar(
            &[
                GrammarSection {
                    name: "Subjective",
                    fact_ids: vec!["f1", "f2"],
                },
                GrammarSection {
                    name: "Plan",
                    fact_ids: vec!["f3"],
                },
            ],
            3,
            120,
        );
        assert!(
            g.starts_with("root ::= \"{\\\"sections\\\":[\" sec0 \",\" sec1 \"]}\""),
            "{g}"
        );
        assert!(
            g.contains(
                "sec1 ::= \"{\\\"name\\\":\\\"Plan\\\",\\\"statements\\\":[\" st1 (\",\" st1){0,2}"
            ),
            "{g}"
        );
        assert!(
            g.contains("fid0 ::= \"\\\"f1\\\"\" | \"\\\"f2\\\"\""),
            "{g}"
        );
        assert!(g.contains("fid1 ::= \"\\\"f3\\\"\"\n"), "{g}");
        assert!(g.contains("char{3,120}"), "{g}");
    }

    #[test]
    fn section_names_cannot_break_out_of_the_literal() {
        let g = note_grammar(
            &[GrammarSection {
                name: "Plan\" | evil",
                fact_ids: vec!["f1"],
            }],
            1,
            10,
        );
        assert!(g.contains("\\\"Plan  evil\\\""), "{g}");
    }
}
