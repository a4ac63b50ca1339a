# Sphinx configuration of the course site (copied into the generated source by reprolib.site).
# Everything the pages need ships with the installed packages: no CDN, no network at build time.
project = "Reproductions: training dynamics and the geometry of learning"
author = "the reprolib authors"
extensions = ["myst_nb", "sphinx-mathjax-offline"]   # MathJax from a local copy (the package's own files)
nb_execution_mode = "off"                             # pages show the committed GPU outputs
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3
html_theme = "sphinx_book_theme"
html_title = "Reproductions"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"show_toc_level": 2, "use_download_button": True, "home_page_in_toc": True,
                      "navigation_with_keys": False}
html_last_updated_fmt = None
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header", "misc.highlighting_failure"]
nb_render_markdown_format = "myst"
