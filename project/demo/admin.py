from django.contrib import admin

from project.demo.models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """Edit a task here and watch /tasks/ change in every open browser."""

    list_display = ["title", "done", "updated_at"]
    list_editable = ["done"]
    list_filter = ["done"]
    search_fields = ["title"]
    actions = ["mark_done"]

    @admin.action(description="Mark selected tasks done (one live batch event)")
    def mark_done(self, request, queryset):  # type: ignore[no-untyped-def]
        from realtime import live

        with live.batch():
            queryset.update(done=True)  # captured: one task.updated per row, in one batch
