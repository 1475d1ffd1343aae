"""Image canvases: a zoom/pan viewer, the image-to-image source canvas and the mask painter."""
