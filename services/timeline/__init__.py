"""The MASH timeline: one chronology per child, siblings beside it, patterns flagged."""
