//! The CMS ICD-10-CM tabular list (`icd10cm-tabular.xml`) parsed into an in-memory tree.
//!
//! The XML nests `<diag>` elements: a category (`E11`), its subcategories (`E11.6`), down to
//! the billable leaves (`E11.65`). A `<sevenChrDef>` on a node means every leaf below it takes a
//! 7th character (injuries: `A` initial encounter, `D` subsequent, `S` sequela); those 7-character
//! codes are not listed in the file, so they are derived here on lookup instead of stored.

use std::collections::HashMap;
use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::terms::TermIndex;
use super::CodingError;

/// Index of a node in [`Icd10Index::nodes`].
pub(crate) type NodeId = u32;

/// One `<diag>` of the tabular list.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// With the dot, as CMS prints it: "M25.561".
    pub code: String,
    pub title: String,
    pub parent: Option<NodeId>,
    pub children: Vec<NodeId>,
    /// Inclusion terms and "Includes" notes: other wordings that are coded here.
    pub inclusion: Vec<String>,
    /// The 7th-character table in force for this node (its own or an ancestor's).
    pub seventh: Option<u32>,
}

/// A code from the table with its official title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: String,
    pub title: String,
    /// True for a complete code that may be reported; false for a category or subcategory.
    pub billable: bool,
}

/// The whole tabular list, loaded once and shared read-only.
#[derive(Debug)]
pub struct Icd10Index {
    version: String,
    pub(crate) nodes: Vec<Node>,
    by_code: HashMap<String, NodeId>,
    /// 7th-character tables: (character, meaning) pairs, e.g. ('A', "initial encounter ...").
    pub(crate) sevenths: Vec<Vec<(char, String)>>,
    pub(crate) terms: TermIndex,
}

impl Icd10Index {
    /// Reads and parses the tabular XML file.
    pub fn load(path: &Path) -> Result<Icd10Index, CodingError> {
        let text = std::fs::read_to_string(path).map_err(|source| CodingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Icd10Index::from_xml(&text).map_err(|reason| CodingError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the tabular XML; the error says where and what is wrong.
    pub fn from_xml(text: &str) -> Result<Icd10Index, String> {
        parse(text)
    }

    /// The fiscal year of the table, as the file states it ("2026").
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of billable codes, 7th-character codes included.
    pub fn billable_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.children.is_empty())
            .map(|n| match n.seventh {
                Some(t) => self.sevenths[t as usize].len(),
                None => 1,
            })
            .sum()
    }

    /// Any code of the table (with or without the dot, any case): category, subcategory,
    /// billable leaf, or a leaf with its 7th character.
    pub fn lookup(&self, code: &str) -> Option<CodeInfo> {
        let code = normalize_code(code)?;
        if let Some(&id) = self.by_code.get(&code) {
            return Some(self.info(id));
        }
        // A 7th-character code: the leaf is the code without its last character and without
        // the placeholder X's that pad it to six characters.
        if code.len() != 8 {
            return None;
        }
        let (base, last) = code.split_at(7);
        let seventh = last.chars().next()?;
        let mut leaf = base.trim_end_matches('X');
        if leaf.ends_with('.') {
            leaf = &leaf[..leaf.len() - 1];
        }
        let &id = self.by_code.get(leaf)?;
        let node = &self.nodes[id as usize];
        if !node.children.is_empty() || self.padded(id) != base {
            return None;
        }
        let table = &self.sevenths[node.seventh? as usize];
        let (_, meaning) = table.iter().find(|(c, _)| *c == seventh)?;
        Some(CodeInfo {
            code,
            title: format!("{}, {meaning}", node.title),
            billable: true,
        })
    }

    pub(crate) fn info(&self, id: NodeId) -> CodeInfo {
        let node = &self.nodes[id as usize];
        CodeInfo {
            code: node.code.clone(),
            title: node.title.clone(),
            billable: node.children.is_empty() && node.seventh.is_none(),
        }
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// The leaf's code padded with placeholder X's to six characters, ready for a 7th.
    fn padded(&self, id: NodeId) -> String {
        let mut code = self.nodes[id as usize].code.clone();
        if !code.contains('.') {
            code.push('.');
        }
        while code.len() < 7 {
            code.push('X');
        }
        code
    }
}

/// Upper case, dot after the third character; None for something that cannot be a code.
fn normalize_code(code: &str) -> Option<String> {
    let plain: String = code
        .trim()
        .chars()
        .filter(|c| *c != '.')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if plain.len() < 3 || plain.len() > 7 || !plain.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(if plain.len() == 3 {
        plain
    } else {
        format!("{}.{}", &plain[..3], &plain[3..])
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Diag,
    Name,
    Desc,
    Note,
    Includes,
    Extension,
    SevenChrDef,
    Version,
    Other,
}

fn tag(name: &str) -> Tag {
    match name {
        "diag" => Tag::Diag,
        "name" => Tag::Name,
        "desc" => Tag::Desc,
        "note" => Tag::Note,
        // Both wordings coded here: "Includes" notes (I10: "high blood pressure") and
        // inclusion terms (J06.9: "Upper respiratory infection NOS").
        "includes" | "inclusionTerm" => Tag::Includes,
        "extension" => Tag::Extension,
        "sevenChrDef" => Tag::SevenChrDef,
        "version" => Tag::Version,
        _ => Tag::Other,
    }
}

fn parse(text: &str) -> Result<Icd10Index, String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Tag> = Vec::new();
    // Open <diag> nodes, innermost last.
    let mut open: Vec<NodeId> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut sevenths: Vec<Vec<(char, String)>> = Vec::new();
    let mut version = String::new();
    let mut buf = String::new();
    let mut extension_char: Option<char> = None;

    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("XML error near byte {at}: {e}"))?;
        match event {
            Event::Start(start) => {
                let t = tag(start.local_name().as_ref());
                match t {
                    Tag::Diag => {
                        let parent = open.last().copied();
                        let seventh = parent.and_then(|p| nodes[p as usize].seventh);
                        let id = NodeId::try_from(nodes.len())
                            .map_err(|_| "too many codes in the file".to_owned())?;
                        nodes.push(Node {
                            code: String::new(),
                            title: String::new(),
                            parent,
                            children: Vec::new(),
                            inclusion: Vec::new(),
                            seventh,
                        });
                        if let Some(p) = parent {
                            nodes[p as usize].children.push(id);
                        }
                        open.push(id);
                    }
                    Tag::SevenChrDef => sevenths.push(Vec::new()),
                    Tag::Extension => {
                        extension_char = start
                            .try_get_attribute("char")
                            .ok()
                            .flatten()
                            .and_then(|a| a.value.chars().next());
                    }
                    _ => {}
                }
                stack.push(t);
                buf.clear();
            }
            Event::Text(t) => buf.push_str(&t),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => buf.push(c),
                _ => buf.push_str(match &*r {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                }),
            },
            Event::End(_) => {
                let t = stack
                    .pop()
                    .ok_or_else(|| format!("unbalanced end tag near byte {at}"))?;
                let parent = stack.last().copied();
                let grandparent = stack.len().checked_sub(2).map(|i| stack[i]);
                let content = buf.trim();
                match (t, parent) {
                    (Tag::Diag, _) => {
                        let id = open
                            .pop()
                            .ok_or_else(|| format!("unbalanced </diag> near byte {at}"))?;
                        if nodes[id as usize].code.is_empty() {
                            return Err(format!("a <diag> without <name> ends near byte {at}"));
                        }
                    }
                    (Tag::Name, Some(Tag::Diag)) => {
                        if let Some(&id) = open.last() {
                            nodes[id as usize].code = content.to_owned();
                        }
                    }
                    (Tag::Desc, Some(Tag::Diag)) => {
                        if let Some(&id) = open.last() {
                            nodes[id as usize].title = content.to_owned();
                        }
                    }
                    (Tag::Note, Some(Tag::Includes)) if grandparent == Some(Tag::Diag) => {
                        if let Some(&id) = open.last() {
                            nodes[id as usize].inclusion.push(content.to_owned());
                        }
                    }
                    (Tag::Extension, Some(Tag::SevenChrDef)) => {
                        let c = extension_char
                            .take()
                            .ok_or_else(|| format!("<extension> without char near byte {at}"))?;
                        if let Some(table) = sevenths.last_mut() {
                            table.push((c, content.to_owned()));
                        }
                    }
                    (Tag::SevenChrDef, Some(Tag::Diag)) => {
                        // Applies to this node and, through inheritance at <diag> start, to
                        // every node opened after it inside this one.
                        if let (Some(&id), Some(n)) = (open.last(), sevenths.len().checked_sub(1)) {
                            nodes[id as usize].seventh = Some(n as u32);
                        }
                    }
                    (Tag::Version, _) if version.is_empty() => version = content.to_owned(),
                    _ => {}
                }
                buf.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("the file ends inside an element (truncated?)".to_owned());
    }
    if nodes.is_empty() {
        return Err("no <diag> codes found; this is not the ICD-10-CM tabular list".to_owned());
    }
    let mut by_code = HashMap::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        if by_code.insert(n.code.clone(), i as NodeId).is_some() {
            return Err(format!("code {} is listed twice", n.code));
        }
    }
    let terms = TermIndex::build(&nodes);
    Ok(Icd10Index {
        version,
        nodes,
        by_code,
        sevenths,
        terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular><version>2026</version>
<chapter><name>19</name><desc>Injury</desc>
<section id="S80-S89"><desc>Injuries to the knee</desc>
<diag><name>S83</name><desc>Dislocation and sprain of knee</desc>
  <sevenChrDef><extension char="A">initial encounter</extension><extension char="D">subsequent encounter</extension></sevenChrDef>
  <diag><name>S83.4</name><desc>Sprain of collateral ligament of knee</desc>
    <diag><name>S83.41</name><desc>Sprain of medial collateral ligament of knee</desc>
      <diag><name>S83.411</name><desc>Sprain of medial collateral ligament of right knee</desc></diag>
    </diag>
  </diag>
</diag>
<diag><name>I10</name><desc>Essential (primary) hypertension</desc>
  <includes><note>high blood pressure</note></includes>
  <excludes1><note>pregnancy &lt;O10&gt;</note></excludes1>
</diag>
</section></chapter></ICD10CM.tabular>"#;

    #[test]
    fn parses_titles_inclusions_and_seventh_characters() {
        let index = Icd10Index::from_xml(SMALL).unwrap();
        assert_eq!(index.version(), "2026");
        let i10 = index.lookup("i10").unwrap();
        assert_eq!(i10.title, "Essential (primary) hypertension");
        assert!(i10.billable);
        let id = index.by_code["I10"];
        assert_eq!(index.node(id).inclusion, ["high blood pressure"]);
        assert!(!index.lookup("S83.411").unwrap().billable);
        let seven = index.lookup("S83411A").unwrap();
        assert_eq!(seven.code, "S83.411A");
        assert!(seven.billable && seven.title.ends_with("right knee, initial encounter"));
        assert!(index.lookup("S83.411X").is_none());
        assert!(index.lookup("S83.411Z").is_none());
        // S83 (2 leaves' worth: one leaf, two 7th characters) + I10.
        assert_eq!(index.billable_count(), 3);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let cut = &SMALL[..SMALL.len() / 2];
        assert!(Icd10Index::from_xml(cut).is_err());
        assert!(Icd10Index::from_xml("<root><a>1</a></root>")
            .unwrap_err()
            .contains("not the ICD-10-CM"));
    }
}
