"""The browser console: static pages served at / and the map configuration they read (docs/console.md)."""
