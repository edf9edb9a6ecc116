"""Post-processing: upscalers (built-in and spandrel models, tiled) and face restoration.

Entry points: :func:`sdlab.post.upscale.upscale_image`, :func:`sdlab.post.upscale.resolve_upscaler` /
:func:`~sdlab.post.upscale.load_upscaler` (to keep a model across images), and
:func:`sdlab.post.face.load_face_restorer` / :func:`~sdlab.post.face.restore_faces`. Importing this
package imports neither spandrel nor OpenCV; they load on first use.
"""
