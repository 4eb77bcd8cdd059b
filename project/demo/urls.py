from django.urls import path

from project.demo import board, rooms, views

urlpatterns = [
    path("", views.index, name="index"),
    path("publish/", views.publish_message, name="publish"),
    path("chat/", rooms.chat, name="chat"),
    path("chat/<slug:room>/", rooms.chat, name="chat-room"),
    path("cursors/", rooms.cursors, name="cursors"),
    path("cursors/<slug:room>/", rooms.cursors, name="cursors-room"),
    path("tasks/", board.board, name="tasks"),
    path("tasks/new/", board.create_task, name="task-create"),
    path("tasks/<int:pk>/", board.change_task, name="task-change"),
]
