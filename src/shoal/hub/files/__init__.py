"""The file API of plain arenas: uploads, downloads and edits by path."""
