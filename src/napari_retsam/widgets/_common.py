"""Helpers shared by the dock widgets: user-error notifications, worker plumbing
and layer bookkeeping.

Every widget follows one pattern: read layers on the main thread, run one core
call (in a napari worker thread when it is long), write layers back on the main
thread. A :class:`~napari_retsam.errors.RetsamInputError` raised anywhere in that
chain becomes a napari notification, never a traceback in the viewer.

Layer bookkeeping: :func:`watch_layer_list` keeps a widget's layer choices
current, :func:`set_combo_items` refills a choice box keeping the user's pick,
:func:`add_or_update_layer` writes an output layer in place on re-runs.

The shared set every widget builds on (segment, fine-tune, metrics, Frangi,
GAN): :func:`make_worker` (a napari worker whose errors
are reported once, by the widget's own ``errored`` handler),
:func:`run_error_handler` (a stopped run's partial result, else the error),
:class:`ProgressRelay` (worker thread → UI thread: ``progressed`` and
``records``; :meth:`ProgressRelay.throttled` for step-frequent updates),
:func:`set_progress` (a progress bar update), :func:`browse_row` (a path field
with its "…" file/folder button) and :func:`dock_as_tab` (all the plugin's
widgets in one tabbed dock).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer, Signal

from napari_retsam.errors import RetsamInputError

F = TypeVar("F", bound=Callable[..., Any])

#: Name endings of the Image layers the widgets write that are maps, not photographs
#: (SAM and Frangi probabilities): never offered where an image to segment is chosen.
DERIVED_IMAGE_SUFFIXES = (" SAM prob", " SAM auto prob", " frangi prob")
#: Names of other such Image layers (the GAN's training sample grid).
DERIVED_IMAGE_NAMES = ("GAN training preview",)


def is_derived_image(layer: Any) -> bool:
    """True for an Image layer one of the widgets wrote as a map or preview (not an input image)."""
    name = str(getattr(layer, "name", ""))
    return name.endswith(DERIVED_IMAGE_SUFFIXES) or name in DERIVED_IMAGE_NAMES


#: Name fragments of a Labels layer taken as an image's field of view (the reader's ``<id> FOV``,
#: the sample's ``synthetic FOV``).
FOV_HINTS = ("fov", "field of view")


def fov_fits(fov: Any, image: Any) -> bool:
    """True when the Labels layer ``fov`` has the image's spatial shape (H×W, or N×H×W for a stack)."""
    shape = tuple(np.shape(image.data))
    spatial = shape[:-1] if getattr(image, "rgb", False) else shape
    return tuple(np.shape(fov.data)) in (spatial, spatial[-2:])


def find_fov_layer(viewer: Any, image: Any) -> Any:
    """The first FOV-named Labels layer (:data:`FOV_HINTS`) that fits ``image``, or None."""
    from napari.layers import Labels

    for layer in viewer.layers:
        name = str(layer.name).lower()
        if isinstance(layer, Labels) and any(h in name for h in FOV_HINTS) and fov_fits(layer, image):
            return layer
    return None

__all__ = [
    "ProgressRelay",
    "ThrottledProgress",
    "DERIVED_IMAGE_NAMES",
    "DERIVED_IMAGE_SUFFIXES",
    "FOV_HINTS",
    "add_or_update_layer",
    "browse_row",
    "dock_as_tab",
    "find_fov_layer",
    "fov_fits",
    "is_derived_image",
    "make_worker",
    "notify_user_errors",
    "run_error_handler",
    "set_progress",
    "set_combo_items",
    "show_error",
    "show_info",
    "show_warning",
    "watch_layer_list",
    "worker_error_handler",
]


def notify_user_errors(func: F) -> F:
    """Decorate a widget callback: a :class:`RetsamInputError` becomes a notification.

    The callback returns ``None`` in that case; other exceptions propagate.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RetsamInputError as exc:
            show_error(str(exc))
            return None

    return wrapper  # type: ignore[return-value]


def worker_error_handler(exc: BaseException) -> None:
    """Connect to a napari worker's ``errored`` signal.

    User errors show as one-line notifications; anything else shows its type and
    message (the full traceback still reaches napari's log).
    """
    if isinstance(exc, RetsamInputError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


def run_error_handler(on_partial: Callable[[Any], None], status: Any) -> Callable[[BaseException], None]:
    """An ``errored`` handler for a worker whose run may be stopped (the cancel contract of
    :mod:`napari_retsam.progress`): a :class:`~napari_retsam.progress.Cancelled` carrying a
    partial result goes to ``on_partial`` (shown like a finished run; its checkpoint is written);
    any other error shows ``"stopped: …"`` in the ``status`` label and is reported once
    (:func:`worker_error_handler`)."""
    from napari_retsam.progress import Cancelled

    def handler(exc: BaseException) -> None:
        if isinstance(exc, Cancelled) and exc.partial is not None:
            on_partial(exc.partial)
            return
        status.setText(f"stopped: {exc}")
        worker_error_handler(exc)

    return handler


def make_worker(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A napari worker running ``func(*args, **kwargs)``, not started yet.

    Errors are not re-raised in the main thread (``_ignore_errors=True``) and
    napari's own error relay (a notification with the traceback) is
    disconnected, so each error is reported once, by the handlers the caller
    connects to ``worker.errored``.
    """
    worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True, **kwargs)
    try:
        worker.errored.disconnect(worker._relay_error)
    except (AttributeError, TypeError, RuntimeError):
        pass
    return worker


class ProgressRelay(QObject):
    """Carries ``progress(done, total, message)`` (and batches of event records) from the
    worker thread to the UI thread.

    Pass ``relay.progressed.emit`` as the core call's ``progress`` callback (or
    :meth:`throttled`'s callbacks for frequent updates) and connect
    ``relay.progressed`` / ``relay.records`` to main-thread slots (queued connections).
    """

    progressed = Signal(int, int, str)
    #: a list of event records (e.g. the fine-tuning log: steps, validations, notes)
    records = Signal(list)

    def throttled(self, interval_s: float, urgent: Callable[[dict[str, Any]], bool] | None = None
                  ) -> ThrottledProgress:
        """Worker-side callbacks that emit at most once per ``interval_s`` (see :class:`ThrottledProgress`)."""
        return ThrottledProgress(self, interval_s, urgent)


class ThrottledProgress:
    """``progress``/``record`` callbacks for a worker thread that reach the UI thread at most once per
    ``interval_s`` seconds: every signal is a queued repaint on the GUI thread, and a step-frequent
    stream of them slows a CPU-bound worker (the fine-tuning benchmark lost a quarter of its
    throughput). A progress call is emitted when the interval has passed or the work is complete
    (``done >= total``), carrying the records gathered since the last emission; a record for
    which ``urgent(record)`` is true is emitted at once. Call :meth:`flush` when the work ends
    (also on errors) so no record is lost.
    """

    def __init__(self, relay: ProgressRelay, interval_s: float,
                 urgent: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self._relay = relay
        self._interval = float(interval_s)
        self._urgent = urgent
        self._pending: list[dict[str, Any]] = []
        self._last = float("-inf")  # the first update is always shown

    def _due(self) -> bool:
        import time

        return time.monotonic() - self._last >= self._interval

    def _emit_records(self) -> None:
        import time

        self._last = time.monotonic()
        if self._pending:
            self._relay.records.emit(list(self._pending))
            self._pending.clear()

    def progress(self, done: int, total: int, message: str) -> None:
        """The ``progress(done, total, message)`` callback of a core call."""
        if self._due() or (total and done >= total):
            self._emit_records()
            self._relay.progressed.emit(int(done), int(total), str(message))

    def record(self, record: dict[str, Any]) -> None:
        """The ``on_event(record)`` callback: delivered with the next progress emission, or now."""
        self._pending.append(record)
        if (self._urgent is not None and self._urgent(record)) or self._due():
            self._emit_records()

    def flush(self) -> None:
        """Emit the records still pending."""
        if self._pending:
            self._relay.records.emit(list(self._pending))
            self._pending.clear()


def set_progress(bar: Any, done: int, total: int) -> None:
    """Show ``done`` of ``total`` on a ``QProgressBar`` (range reset only when it changes, so a
    frequent update costs one repaint)."""
    total = max(int(total), 1)
    if bar.minimum() != 0 or bar.maximum() != total:
        bar.setRange(0, total)
    bar.setValue(min(max(int(done), 0), total))


def browse_row(edit: Any, *, directory: bool = False, caption: str = "", file_filter: str = "",
               parent: Any = None) -> Any:
    """A row widget: the line edit ``edit`` and a "…" button that opens a file (or, with
    ``directory``, a folder) dialog starting at the edit's text and writes the choice into it.

    The button is the row's ``browse_button`` attribute.
    """
    from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

    row = QWidget(parent)
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("…", row)
    button.setMaximumWidth(32)
    button.setToolTip(caption or ("choose a folder" if directory else "choose a file"))

    def browse() -> None:
        dialog_parent = row.window()
        if directory:
            chosen = QFileDialog.getExistingDirectory(dialog_parent, caption or "Choose a folder", edit.text())
        else:
            chosen, _ = QFileDialog.getOpenFileName(dialog_parent, caption or "Choose a file", edit.text(),
                                                    file_filter)
        if chosen:
            edit.setText(chosen)

    button.clicked.connect(browse)
    layout.addWidget(button)
    row.browse_button = button
    return row


class _RenameWatcher:
    """``layers.events.inserted`` callback: connects the new layer's name event to
    ``refresh``, holding ``refresh`` weakly when it is a bound method (napari
    holds bound methods weakly too, so a closed widget is not kept alive)."""

    def __init__(self, refresh: Callable[..., Any]) -> None:
        try:
            ref: Callable[[], Callable[..., Any] | None] = weakref.WeakMethod(refresh)  # type: ignore[arg-type]
        except TypeError:  # a plain function: hold it
            ref = lambda: refresh  # noqa: E731
        self._refresh = ref

    def __call__(self, event: Any) -> None:
        refresh = self._refresh()
        if refresh is not None:
            event.value.events.name.connect(refresh)


def watch_layer_list(viewer: Any, refresh: Callable[..., Any]) -> None:
    """Call ``refresh(event)`` whenever a layer is inserted, removed, reordered or
    renamed in ``viewer`` (layers present now and layers added later).

    ``refresh`` should be a bound method of the widget: napari's event emitters
    hold bound methods weakly.
    """
    layers = viewer.layers
    for emitter in (layers.events.inserted, layers.events.removed, layers.events.reordered):
        emitter.connect(refresh)
    layers.events.inserted.connect(_RenameWatcher(refresh))
    for layer in layers:
        layer.events.name.connect(refresh)


def set_combo_items(combo: Any, names: Sequence[str], *, select_last_if_lost: bool = False) -> None:
    """Refill a ``QComboBox`` with ``names``, keeping the current choice when it is
    still listed (else the first item, or the last with ``select_last_if_lost``).

    Signals are blocked meanwhile, so refilling is not a user choice.
    """
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    if current in names:
        combo.setCurrentText(current)
    elif names and select_last_if_lost:
        combo.setCurrentIndex(len(names) - 1)
    combo.blockSignals(False)


def add_or_update_layer(viewer: Any, layer_type: type, name: str, data: Any, **add_kwargs: Any) -> Any:
    """Write an output layer: update it in place, or (re)create it.

    If ``viewer`` has a layer called ``name`` that is a ``layer_type`` (e.g.
    ``napari.layers.Image``) with data of the same shape, its ``data`` is
    replaced (keeping the user's display settings); otherwise a layer of that
    name is removed and a new one is added with
    ``viewer.add_<image|labels|...>(data, name=name, **add_kwargs)``.
    Returns the layer.
    """
    existing = viewer.layers[name] if name and name in viewer.layers else None
    if isinstance(existing, layer_type) and existing.data.shape == data.shape:
        existing.data = data
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    add = getattr(viewer, f"add_{layer_type.__name__.lower()}")
    return add(data, name=name, **add_kwargs)


# ---------------------------------------------------------------------------- docking
#: napari names the dock of a widget opened from the Plugins menu "<display name> (napari-retsam)".
PLUGIN_DOCK_SUFFIX = "(napari-retsam)"
#: Dynamic properties: on a plugin widget (``dock_as_tab``), on a dock already placed, on a watched window.
_WIDGET_PROPERTY = "napari_retsam_widget"
_PLACED_PROPERTY = "napari_retsam_placed"
_WATCHED_PROPERTY = "napari_retsam_watched"


def _dock_of(widget: Any) -> Any:
    """The QDockWidget holding ``widget`` (napari wraps it in a container first), or None."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def _is_plugin_dock(dock: Any) -> bool:
    from qtpy.QtWidgets import QWidget

    if str(dock.objectName()).endswith(PLUGIN_DOCK_SUFFIX):
        return True
    inner = dock.widget()
    return inner is not None and (bool(inner.property(_WIDGET_PROPERTY))
                                  or any(w.property(_WIDGET_PROPERTY) for w in inner.findChildren(QWidget)))


def _place_dock(window: Any, dock: Any, height_before: int | None) -> None:
    """Tabify a plugin ``dock`` onto the last plugin dock in its area of ``window`` (main thread).

    The window keeps the height it had before the dock came (``height_before``), or, when
    that is unknown, is brought back within the screen should it have grown taller."""
    from qtpy.QtWidgets import QApplication

    try:
        if dock.property(_PLACED_PROPERTY) or dock.parentWidget() is not window or not _is_plugin_dock(dock):
            return
        dock.setProperty(_PLACED_PROPERTY, True)
        if dock.isFloating():
            return
        area = window.dockWidgetArea(dock)
        siblings = [d for d in window.findChildren(type(dock)) if d is not dock and d.parentWidget() is window
                    and not d.isFloating() and window.dockWidgetArea(d) == area and _is_plugin_dock(d)]
        if not siblings:
            return
        window.tabifyDockWidget(siblings[-1], dock)
        dock.show()
        dock.raise_()  # the widget just opened is the tab shown
        if window.isMaximized() or window.isFullScreen():
            return
        screen = window.screen() if hasattr(window, "screen") else QApplication.primaryScreen()
        limit = screen.availableGeometry().height() if screen is not None else window.height()
        target = min(height_before if height_before is not None else window.height(), limit)
        if window.height() > target:
            window.resize(window.width(), max(target, window.minimumSizeHint().height()))
    except RuntimeError:  # the window or dock is being destroyed
        pass


class _WindowWatcher(QObject):
    """Event filter on napari's main window: every plugin dock added later is tabified."""

    def eventFilter(self, obj: Any, event: Any) -> bool:
        from qtpy.QtWidgets import QDockWidget

        if event.type() == QEvent.Type.ChildAdded and isinstance(event.child(), QDockWidget):
            window, dock, height = obj, event.child(), obj.height()  # height before the layout grows
            QTimer.singleShot(0, lambda: _place_dock(window, dock, height))
        return False


def dock_as_tab(widget: Any) -> None:
    """Make ``widget`` and the plugin's other widgets share one tabbed dock.

    napari docks a widget opened from **Plugins › RetSAM vessels** on the right,
    below the ones already there (a manifest cannot ask for tabs), and the main
    window grows to the sum of their heights: about 2,800 px with all five open.
    Called from each widget's ``__init__``: once the widget is docked in the
    viewer's main window, its dock becomes a tab of the plugin's last dock in the
    same area and is raised, and a watcher on the window does the same for every
    plugin dock opened afterwards (any "… (napari-retsam)" dock, whatever its
    widget does), keeping the window's height. A floating dock, or one the user
    dragged to another area, is left alone; widgets never docked are unaffected.
    """
    widget.setProperty(_WIDGET_PROPERTY, True)
    ref = weakref.ref(widget)

    def docked() -> None:  # after napari's add_dock_widget has returned
        target = ref()
        if target is None:
            return
        try:
            dock = _dock_of(target)
            window = None if dock is None else dock.parentWidget()
            if window is None or not hasattr(window, "tabifyDockWidget"):
                return
            if not window.property(_WATCHED_PROPERTY):
                window.setProperty(_WATCHED_PROPERTY, True)
                window.installEventFilter(_WindowWatcher(window))
            _place_dock(window, dock, None)
        except RuntimeError:
            pass

    QTimer.singleShot(0, docked)
